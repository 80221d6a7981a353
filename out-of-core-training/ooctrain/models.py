"""Networks of the out-of-core experiments: ResNet-50 (the paper's headline run) and
DenseNet-121 (one of the further networks in the official README's result figure).

Both are the ImageNet architectures (He et al. 2016, bottleneck blocks with the stride on
the 3x3 convolution; Huang et al. 2017, growth 32, blocks 6-12-24-16, bottleneck width 4x
growth, compression 0.5) built from nnabla's parametric functions. Every size is a
parameter so that the tests and the CPU smoke runs use the same code at a few thousand
parameters; ``ARCHITECTURES`` holds the published sizes.

Small inputs (e.g. 32x32) use ``small_input=True``: a 3x3 stride-1 stem without the
max-pooling, as usual for CIFAR-sized images, so the spatial size survives the stages.
"""
from dataclasses import dataclass, field

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF

from common.errors import UserError


@dataclass(frozen=True)
class ResNetConfig:
    blocks: tuple = (3, 4, 6, 3)          # bottleneck blocks per stage (ResNet-50)
    width: int = 64                       # channels of the first stage's 3x3 convolutions
    expansion: int = 4


@dataclass(frozen=True)
class DenseNetConfig:
    blocks: tuple = (6, 12, 24, 16)       # dense layers per block (DenseNet-121)
    growth: int = 32
    stem: int = 64
    bottleneck: int = 4                   # 1x1 convolution width = bottleneck * growth
    compression: float = 0.5


ARCHITECTURES = {
    "resnet50": ResNetConfig(),
    "resnet101": ResNetConfig(blocks=(3, 4, 23, 3)),
    "resnet152": ResNetConfig(blocks=(3, 8, 36, 3)),
    "densenet121": DenseNetConfig(),
    "densenet169": DenseNetConfig(blocks=(6, 12, 32, 32)),
}


@dataclass(frozen=True)
class ModelSpec:
    """An architecture by name with optional size overrides (the tests' tiny networks)."""
    arch: str = "resnet50"
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_sizes(cls, arch, blocks=None, width=None, growth=None):
        """The command-line size flags: ``width`` is the base width of either family (ResNet
        first-stage channels, DenseNet stem channels); ``growth`` exists for DenseNet only."""
        width_key = "stem" if arch.startswith("densenet") else "width"
        sizes = {"blocks": blocks, width_key: width, "growth": growth}
        return cls(arch, {k: v for k, v in sizes.items() if v is not None})

    def config(self):
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.arch!r}; use one of "
                            f"{', '.join(ARCHITECTURES)}")
        base = ARCHITECTURES[self.arch]
        unknown = sorted(set(self.overrides) - set(base.__dataclass_fields__))
        if unknown:
            raise UserError(f"{self.arch} has no size parameter {unknown[0]!r}; it has "
                            f"{', '.join(base.__dataclass_fields__)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.overrides.items()}
        return type(base)(**{**base.__dict__, **values})


def _conv_bn(h, maps, kernel, stride, test, relu=True, name="conv"):
    pad = (kernel // 2, kernel // 2)
    with nn.parameter_scope(name):
        h = PF.convolution(h, maps, (kernel, kernel), pad=pad, stride=(stride, stride),
                           with_bias=False)
        h = PF.batch_normalization(h, batch_stat=not test)
    return F.relu(h) if relu else h


def _stem(x, maps, test, small_input):
    if small_input:
        return _conv_bn(x, maps, 3, 1, test, name="stem")
    h = _conv_bn(x, maps, 7, 2, test, name="stem")
    return F.max_pooling(h, (3, 3), (2, 2), pad=(1, 1))


def resnet(x, num_classes, config, test=False, small_input=False):
    """Bottleneck ResNet logits ``(N, num_classes)``."""
    h = _stem(x, config.width, test, small_input)
    for stage, count in enumerate(config.blocks):
        maps = config.width * 2 ** stage
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            with nn.parameter_scope(f"stage{stage + 1}/block{block + 1}"):
                out_maps = maps * config.expansion
                if block == 0:
                    shortcut = _conv_bn(h, out_maps, 1, stride, test, relu=False,
                                        name="shortcut")
                else:
                    shortcut = h
                r = _conv_bn(h, maps, 1, 1, test, name="conv1")
                r = _conv_bn(r, maps, 3, stride, test, name="conv2")
                r = _conv_bn(r, out_maps, 1, 1, test, relu=False, name="conv3")
                h = F.relu(r + shortcut)
    h = F.global_average_pooling(h)
    return PF.affine(h, num_classes, name="fc")


def _bn_relu_conv(h, maps, kernel, test, name):
    with nn.parameter_scope(name):
        h = F.relu(PF.batch_normalization(h, batch_stat=not test))
        pad = (kernel // 2, kernel // 2)
        return PF.convolution(h, maps, (kernel, kernel), pad=pad, with_bias=False)


def densenet(x, num_classes, config, test=False, small_input=False):
    """DenseNet-BC logits ``(N, num_classes)`` (pre-activation dense layers)."""
    if small_input:
        with nn.parameter_scope("stem"):
            h = PF.convolution(x, config.stem, (3, 3), pad=(1, 1), with_bias=False)
    else:
        with nn.parameter_scope("stem"):
            h = PF.convolution(x, config.stem, (7, 7), pad=(3, 3), stride=(2, 2),
                               with_bias=False)
            h = F.relu(PF.batch_normalization(h, batch_stat=not test))
        h = F.max_pooling(h, (3, 3), (2, 2), pad=(1, 1))
    for b, count in enumerate(config.blocks):
        for layer in range(count):
            with nn.parameter_scope(f"block{b + 1}/layer{layer + 1}"):
                new = _bn_relu_conv(h, config.bottleneck * config.growth, 1, test, "conv1")
                new = _bn_relu_conv(new, config.growth, 3, test, "conv2")
            h = F.concatenate(h, new, axis=1)
        if b + 1 < len(config.blocks):
            maps = int(h.shape[1] * config.compression)
            with nn.parameter_scope(f"transition{b + 1}"):
                h = _bn_relu_conv(h, maps, 1, test, "conv")
            h = F.average_pooling(h, (2, 2), (2, 2))
    with nn.parameter_scope("final"):
        h = F.relu(PF.batch_normalization(h, batch_stat=not test))
    h = F.global_average_pooling(h)
    return PF.affine(h, num_classes, name="fc")


def build(spec, x, num_classes, test=False, small_input=False):
    """Logits of the network ``spec`` (a :class:`ModelSpec`) on input ``x`` (N, 3, H, W)."""
    config = spec.config()
    net = resnet if isinstance(config, ResNetConfig) else densenet
    return net(x, num_classes, config, test=test, small_input=small_input)


def count_parameters(params):
    return sum(int(p.size) for p in params.values())
