"""Shared D3Net building blocks (multidilated dense "D2" blocks and D3 blocks).

See :mod:`d3net_blocks.blocks` for the explanation of the multidilated convolution.
"""
from d3net_blocks.blocks import (  # noqa: F401
    D3Layers,
    batch_norm,
    bn_conv,
    ceil_channels,
    conv2d,
    d2_block,
    d2_block_bc,
    d2_block_with_initial_layer,
    d3_block,
    d3_block_dense,
)

__all__ = [
    "D3Layers",
    "batch_norm",
    "bn_conv",
    "ceil_channels",
    "conv2d",
    "d2_block",
    "d2_block_bc",
    "d2_block_with_initial_layer",
    "d3_block",
    "d3_block_dense",
]
