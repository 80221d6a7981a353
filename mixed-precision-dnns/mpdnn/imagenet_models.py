"""ImageNet networks of the paper's Table 4 (ResNet-18, MobileNetV2) with quantized layers.

The official code has CIFAR-10 only; these two networks are written from their
papers (He et al. 2016, "Deep Residual Learning", Table 1; Sandler et al. 2018,
"MobileNetV2", Table 2) in the style of :mod:`mpdnn.resnet_cifar`. Every
convolution and the classifier go through :func:`mpdnn.layers.conv` /
:func:`mpdnn.layers.affine` and every nonlinearity through
:func:`mpdnn.layers.activation`, so all weights and all ReLU outputs are
quantizable and counted by the memory constraints (``Asize``). Batch
normalization is ``PF.batch_normalization`` in scope ``bn`` (not quantized;
it can be folded into the preceding convolution at deployment).

Parameter scopes (all in nnabla's current scope)::

    ResNet-18    conv1/{quantized_conv,bn,Asize,Aquant}          7x7/2 stem
                 layer<s>/block<b>/conv1/{quantized_conv,bn,Asize,Aquant}
                 layer<s>/block<b>/conv2/{quantized_conv,bn}
                 layer<s>/block<b>/shortcut/{quantized_conv,bn}   (projection blocks only)
                 layer<s>/block<b>/{Asize,Aquant}                 (after the addition)
                 fc/quantized_affine/...
    MobileNetV2  features/0/{quantized_conv,bn,Asize,Aquant}     3x3/2 stem
                 features/<i>/expand/...      (1x1, absent in features/1 where t = 1)
                 features/<i>/depthwise/...   (3x3, group = channels)
                 features/<i>/project/{quantized_conv,bn}  (linear bottleneck)
                 features/18/...              (1x1 conv to 1280 channels)
                 fc/quantized_affine/...

with s = 1..4, b = 1..2, i = 1..17 (the numbering of the blocks of the
MobileNetV2 table, stem = 0, last 1x1 conv = 18).

Choices not fixed by the papers (ours):

* **ReLU6 is** :func:`mpdnn.layers.activation`: a plain ReLU in float networks,
  and in quantized ones the learned unsigned quantizer, whose upper limit
  ``xmax`` (q_max) clips the activation as ReLU6's 6 does, but at a learned
  value. So a float MobileNetV2 here uses ReLU, not ReLU6.
* MobileNetV2's linear bottleneck outputs (projection, residual sums) have no
  activation and are therefore not quantized: the activation quantizers are
  unsigned (``*_relu``) and these tensors are signed. Only the expansion and
  depthwise outputs (and the stem / last 1x1 conv) are quantized activations.
* No dropout before the classifier; the ResNet-18 projection shortcut is the
  usual 1x1 strided convolution + BN (option B of He et al.).
* Initialization: He normal (fan-in) for convolutions, uniform
  +-1/sqrt(fan_in) for the classifier, BN gamma 1 / beta 0.
* ``qcfg.scale_layer`` (a learned scalar on the logits, as in the official
  CIFAR-10 code) is honoured.

Both networks are fully convolutional up to the global average pool, so any
input of at least 32x32 works (e.g. 32x32 or 64x64 for CPU tests); the paper's
networks take 224x224 ImageNet crops.
"""
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
from nnabla.initializer import NormalInitializer, UniformInitializer
from nnabla.parameter import get_parameter_or_create

from mpdnn import layers as L

# ResNet-18: (channels, stride of the first block) per stage, two basic blocks each.
RESNET18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))
RESNET18_BLOCKS = 2

# MobileNetV2 (Sandler et al. 2018, Table 2): expansion t, output channels c,
# repetitions n, stride s of the first repetition.
MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENETV2_STEM = 32
MOBILENETV2_LAST = 1280


def _bn(h, test):
    return PF.batch_normalization(h, batch_stat=not test)


def _he_init(inmaps, kernel, group=1):
    fan_in = (inmaps // group) * int(np.prod(kernel))
    return NormalInitializer(sigma=float(np.sqrt(2.0 / fan_in)))


def _conv_bn(x, outmaps, kernel, qcfg, test, fused, stride=1, group=1):
    """Quantized conv (padding keeps the size at stride 1) + BN, in the current scope."""
    pad = tuple(k // 2 for k in kernel)
    h = L.conv(x, outmaps, kernel, qcfg, pad=pad, stride=(stride, stride), group=group,
               w_init=_he_init(x.shape[1], kernel, group), fused=fused)
    return _bn(h, test)


def _classifier(h, num_classes, qcfg, fused):
    """Global average pool, quantized fc in scope ``fc`` (and the optional scale layer)."""
    h = F.average_pooling(h, h.shape[-2:])
    with nn.parameter_scope("fc"):
        bound = 1.0 / np.sqrt(np.prod(h.shape[1:]))
        init = UniformInitializer((-bound, bound))
        h = L.affine(h, num_classes, qcfg, w_init=init, b_init=init, fused=fused)
        if getattr(qcfg, "scale_layer", False):
            scale = get_parameter_or_create("scale_layer", (1, 1), np.ones((1, 1), np.float32))
            h = scale * h
    return h


# ----------------------------------------------------------------------------- ResNet-18

def _basic_block(x, channels, stride, qcfg, test, fused):
    with nn.parameter_scope("conv1"):
        h = L.activation(_conv_bn(x, channels, (3, 3), qcfg, test, fused, stride), qcfg, fused)
    with nn.parameter_scope("conv2"):
        h = _conv_bn(h, channels, (3, 3), qcfg, test, fused)
    s = x
    if stride != 1 or x.shape[1] != channels:
        with nn.parameter_scope("shortcut"):
            s = _conv_bn(x, channels, (1, 1), qcfg, test, fused, stride)
    return L.activation(F.add2(h, s), qcfg, fused)


def resnet18(x, num_classes, qcfg, test, fused=None):
    """Logits of an ImageNet ResNet-18 for images ``x`` (N, 3, H, W)."""
    with nn.parameter_scope("conv1"):
        h = _conv_bn(x, 64, (7, 7), qcfg, test, fused, stride=2)
        h = L.activation(h, qcfg, fused)
    h = F.max_pooling(h, (3, 3), (2, 2), pad=(1, 1))
    for stage, (channels, stride) in enumerate(RESNET18_STAGES, start=1):
        for block in range(1, RESNET18_BLOCKS + 1):
            with nn.parameter_scope(f"layer{stage}/block{block}"):
                h = _basic_block(h, channels, stride if block == 1 else 1, qcfg, test, fused)
    return _classifier(h, num_classes, qcfg, fused)


# ----------------------------------------------------------------------------- MobileNetV2

def make_divisible(value, divisor=8):
    """Channels scaled by the width multiplier: nearest multiple of ``divisor``, never
    more than 10% below ``value`` (the rounding of the MobileNet reference models)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _inverted_residual(x, channels, stride, expansion, qcfg, test, fused):
    hidden = int(round(x.shape[1] * expansion))
    h = x
    if expansion != 1:
        with nn.parameter_scope("expand"):
            h = L.activation(_conv_bn(h, hidden, (1, 1), qcfg, test, fused), qcfg, fused)
    with nn.parameter_scope("depthwise"):
        h = _conv_bn(h, hidden, (3, 3), qcfg, test, fused, stride, group=hidden)
        h = L.activation(h, qcfg, fused)
    with nn.parameter_scope("project"):
        h = _conv_bn(h, channels, (1, 1), qcfg, test, fused)   # linear: no activation
    if stride == 1 and x.shape[1] == channels:
        h = F.add2(h, x)
    return h


def mobilenet_v2(x, num_classes, qcfg, test, fused=None, width=1.0):
    """Logits of a MobileNetV2 with width multiplier ``width`` for images ``x`` (N, 3, H, W)."""
    with nn.parameter_scope("features/0"):
        h = _conv_bn(x, make_divisible(MOBILENETV2_STEM * width), (3, 3), qcfg, test, fused,
                     stride=2)
        h = L.activation(h, qcfg, fused)
    index = 1
    for expansion, channels, repeats, stride in MOBILENETV2_SETTINGS:
        out = make_divisible(channels * width)
        for r in range(repeats):
            with nn.parameter_scope(f"features/{index}"):
                h = _inverted_residual(h, out, stride if r == 0 else 1, expansion,
                                       qcfg, test, fused)
            index += 1
    with nn.parameter_scope(f"features/{index}"):
        # the last layer is not made thinner for width < 1 (as in the MobileNetV2 paper)
        h = _conv_bn(h, make_divisible(MOBILENETV2_LAST * max(1.0, width)), (1, 1), qcfg, test,
                     fused)
        h = L.activation(h, qcfg, fused)
    return _classifier(h, num_classes, qcfg, fused)


MODELS = {"resnet18": resnet18, "mobilenetv2": mobilenet_v2}
