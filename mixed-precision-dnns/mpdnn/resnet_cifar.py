"""CIFAR-10 ResNets (He et al. 2016, Section 4.2) with quantized layers, official names.

Depth 6n+2 with n basic blocks per stage and 16/32/64 channels; ResNet-20 is n = 3.
Parameters are created in nnabla's current scope: ``conv1/...``,
``res<stage>/layer<block>/basicblock{1,2}/...``, ``fc/quantized_affine/...``;
shortcut type A (strided subsampling + zero channels, no parameters) unless the
experiment asks for B/C projections (``basicblock_s/shortcut_conv``).
"""
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
from nnabla.initializer import UniformInitializer
from nnabla.parameter import get_parameter_or_create

from common.errors import UserError
from mpdnn import layers as L

BLOCKS_PER_STAGE = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
STAGE_CHANNELS = (16, 32, 64)


def _bn(h, test):
    return PF.batch_normalization(h, batch_stat=not test)


def _shortcut(x, channels, stride, qcfg, test, fused):
    kind = (qcfg.shortcut_type or "a").lower()
    project = kind == "c" or (kind == "b" and x.shape[1] != channels)
    if project:
        with nn.parameter_scope("shortcut_conv"):
            return _bn(L.conv(x, channels, (1, 1), qcfg, stride=stride, fused=fused), test)
    if stride != (1, 1):
        x = F.average_pooling(x, (1, 1), stride)   # a 1x1 window: plain subsampling
    if x.shape[1] != channels:
        zeros = F.constant(0, (x.shape[0], channels - x.shape[1]) + x.shape[2:])
        x = F.concatenate(x, zeros, axis=1)
    return x


def basic_block(x, channels, stride, qcfg, test, fused=None):
    with nn.parameter_scope("basicblock1"):
        h = L.conv(x, channels, (3, 3), qcfg, pad=(1, 1), stride=stride, fused=fused)
        h = L.activation(_bn(h, test), qcfg, fused)
    with nn.parameter_scope("basicblock2"):
        h = _bn(L.conv(h, channels, (3, 3), qcfg, pad=(1, 1), fused=fused), test)
    with nn.parameter_scope("basicblock_s"):
        s = _shortcut(x, channels, stride, qcfg, test, fused)
    return L.activation(F.add2(h, s), qcfg, fused)


def resnet_cifar(x, num_classes, qcfg, test, fused=None):
    """Logits of a CIFAR ResNet of depth ``qcfg.num_layers`` for images ``x`` (N, C, H, W)."""
    if qcfg.num_layers not in BLOCKS_PER_STAGE:
        raise UserError(f"CIFAR ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, "
                        f"not {qcfg.num_layers}")
    blocks = BLOCKS_PER_STAGE[qcfg.num_layers]
    with nn.parameter_scope("conv1"):
        h = L.conv(x, STAGE_CHANNELS[0], (3, 3), qcfg, pad=(1, 1), fused=fused)
        h = L.activation(_bn(h, test), qcfg, fused)
    for stage, channels in enumerate(STAGE_CHANNELS):
        first_stride = (1, 1) if stage == 0 else (2, 2)
        with nn.parameter_scope(f"res{stage + 1}"):
            for block in range(blocks):
                with nn.parameter_scope(f"layer{block + 1}"):
                    h = basic_block(h, channels, first_stride if block == 0 else (1, 1),
                                    qcfg, test, fused)
    h = F.average_pooling(h, h.shape[-2:])
    with nn.parameter_scope("fc"):
        bound = 1.0 / np.sqrt(np.prod(h.shape[1:]))
        init = UniformInitializer((-bound, bound))
        h = L.affine(h, num_classes, qcfg, w_init=init, b_init=init, fused=fused)
        if qcfg.scale_layer:
            scale = get_parameter_or_create("scale_layer", (1, 1), np.ones((1, 1), np.float32))
            h = scale * h
    return h
