"""D3Net building blocks (Takahashi & Mitsufuji, "Densely connected multidilated
convolutional networks for dense prediction tasks", CVPR 2021, arXiv:2011.11844).

Multidilated convolution
------------------------
A plain dense block feeds layer ``l`` with the concatenation of all earlier
feature maps and convolves that concatenation with *one* dilation factor.
D3Net's *multidilated* convolution instead gives every incoming skip
connection its own dilation, growing with the depth of the layer that produced
it: the block input is convolved with dilation 1, the output of layer ``i``
with dilation ``2**i``, and the results are summed. A dilated convolution then
only ever reads features whose receptive field already spans the gaps between
its taps, so the receptive field grows exponentially with depth inside one
block without the aliasing ("gridding") of stacked dilated convolutions that
share one factor, while early high-resolution features keep a dense look.

The official implementation (reproduced here, parameter names included) does
not form the concatenation explicitly; it distributes each layer's output to
all later layers as soon as it is computed. The block input ``x``
(``growth_rate * num_layers`` channels; in both official models the output of
a 3x3 "initial layer" convolution) is split into ``num_layers`` slices of ``growth_rate``
channels, one accumulator per layer. For ``i = 1 .. num_layers - 1`` layer
``i`` takes accumulator ``i - 1`` -- complete by then: slice ``i - 1`` of
``x`` plus one contribution from each earlier layer -- and applies
BN -> ReLU -> 3x3 conv with dilation ``2**i`` (padding ``2**i``) producing
``growth_rate * (num_layers - i)`` channels; slice ``j`` of the result is
added to accumulator ``i + j``. So accumulator ``k`` receives the features of
stage ``m - 1`` convolved with dilation ``2**m`` for every ``m <= k``: each
later layer's input is the multidilated convolution of all earlier features,
with the convolutions of all later layers that read one feature map merged
into one wide convolution. The block (the "D2 block") returns the last
``out_block`` accumulators.

A D3 block stacks D2 blocks with the same dense, split-and-accumulate
connectivity *between* blocks (music source separation model), or as a
DenseNet-style concatenation of D2 blocks with a 1x1 reduction
(semantic segmentation backbone). Both flavours are here.

Everything is a plain function taking ``test`` (batch statistics off) and an
optional synchronised-BN communicator ``comm``; :class:`D3Layers` binds those
options once. Parameters are created in the caller's current
``nn.parameter_scope`` with the official names, e.g. a D2 block called inside
scope ``S`` with ``name='bottleneck'`` creates
``S/layers/layer1/bottleneck/norm1/bn/{beta,gamma,mean,var}`` and
``S/layers/layer1/bottleneck/conv1/conv/{W,b}`` (``PF`` adds the ``bn`` /
``conv`` level).
"""
import math

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF

__all__ = [
    "conv2d",
    "batch_norm",
    "bn_conv",
    "d2_block",
    "d2_block_with_initial_layer",
    "d3_block",
    "d2_block_bc",
    "d3_block_dense",
    "D3Layers",
    "ceil_channels",
]


def _weight_init(init_method, in_channels, out_channels, kernel):
    """Weight initializer: ``'xavier'`` (Glorot normal), ``'normal'`` (sigma 0.01) or nnabla's
    default."""
    if init_method is None:
        return None
    if init_method == "xavier":
        sigma = I.calc_normal_std_glorot(in_channels, out_channels, kernel=(kernel, kernel))
        return I.NormalInitializer(sigma)
    if init_method == "normal":
        return I.NormalInitializer(sigma=0.01)
    raise ValueError(f"unknown init_method {init_method!r}; use None, 'xavier' or 'normal'")


def conv2d(x, out_channels, name, kernel=3, stride=1, dilation=1, pad=0, bias=True,
           init_method=None, recompute=False):
    """Square 2-D convolution ``PF.convolution`` named ``name`` (params ``name/conv/W``,
    ``name/conv/b``).

    ``x`` is NCHW. ``pad`` is *not* inferred: pass ``pad=dilation`` for a "same" 3x3.
    """
    w_init = _weight_init(init_method, x.shape[1], out_channels, kernel)
    out = PF.convolution(x, out_channels, kernel=(kernel, kernel), stride=(stride, stride),
                         pad=(pad, pad), dilation=(dilation, dilation), with_bias=bias,
                         w_init=w_init, name=name)
    if recompute:
        out.apply(recompute=True)
    return out


def batch_norm(x, name, test=True, comm=None):
    """Batch normalisation over channel axis 1 (params ``name/bn/{beta,gamma,mean,var}``).

    ``test=True`` uses the stored running statistics; ``test=False`` uses batch
    statistics and updates the running ones. With a ``comm`` (an
    ``nnabla.communicators`` object) the statistics are synchronised across
    workers (``PF.sync_batch_normalization``, group ``'world'``).
    """
    if comm is not None:
        return PF.sync_batch_normalization(x, comm=comm, group="world", batch_stat=not test,
                                           name=name)
    return PF.batch_normalization(x, batch_stat=not test, name=name)


def bn_conv(x, out_channels, name, kernel=3, dilation=1, pad=None, stride=1, test=True,
            comm=None, init_method=None, recompute=False):
    """BN -> ReLU -> conv, in scope ``name`` (params ``name/norm1/bn/*``, ``name/conv1/conv/*``).

    ``pad`` defaults to ``dilation * (kernel // 2)`` (spatial size kept for odd
    kernels), which equals the official choices (pad 1 for 3x3, ``pad=d`` for
    dilated 3x3, 0 for 1x1).
    """
    if pad is None:
        pad = dilation * (kernel // 2)
    with nn.parameter_scope(name):
        h = batch_norm(x, "norm1", test=test, comm=comm)
        h = F.relu(h, inplace=True)
        h = conv2d(h, out_channels, "conv1", kernel=kernel, stride=stride, dilation=dilation,
                   pad=pad, init_method=init_method, recompute=recompute)
    return h


def _accumulate_groups(x, width, count, layer):
    """The official split-and-accumulate scheme of the D2 and D3 blocks.

    Officially ``x`` (``width * count`` channels) is split into ``count`` groups; step ``i``
    (``0 <= i < count - 1``) calls ``layer(i, group_i)`` for ``width * (count - i - 1)``
    channels and adds them, split likewise, to groups ``i + 1, ...``; the groups are then
    concatenated and the caller keeps the last few. Here the groups not yet read stay one
    tensor, to which each step's whole output is added in one go: the same additions in the
    same order, so values and gradients are identical, with far fewer slice and concatenation
    copies (on OpenVINO those took a quarter of a D3Net-MSS patch's time). Returns the final
    groups, in order."""
    finished = []  # groups no later step adds to
    rest = x  # groups i, i + 1, ... before step i
    for i in range(count - 1):
        head = rest[:, :width]
        h = layer(i, head)
        finished.append(head)
        rest = rest[:, width:] + h
    return finished + [rest]


def _last_groups(groups, count):
    kept = groups[-count:]
    return kept[0] if len(kept) == 1 else F.concatenate(*kept, axis=1)


def d2_block(x, growth_rate, num_layers, name="bottleneck", kernel=3, out_block=1, test=True,
             comm=None, init_method=None, recompute=False):
    """Multidilated dense block (the official ``dilated_dense_block``).

    ``x`` must have ``growth_rate * num_layers`` channels. Layer ``i``
    (``1 <= i < num_layers``) lives in scope ``layers/layer{i}/{name}`` and uses
    dilation ``2**i``; it reads channel group ``i - 1`` and its output is added to the later
    groups (:func:`_accumulate_groups`). Returns the last ``out_block * growth_rate``
    channels. With ``num_layers == 1`` there are no parameters and ``x``'s last
    ``out_block * growth_rate`` channels are returned.
    """
    if num_layers == 1:
        return x[:, -out_block * growth_rate:]

    def layer(i, head):
        d = 2 ** (i + 1)
        with nn.parameter_scope(f"layers/layer{i + 1}"):
            return bn_conv(head, growth_rate * (num_layers - i - 1), name, kernel=kernel,
                           dilation=d, pad=d, test=test, comm=comm, init_method=init_method,
                           recompute=recompute)
    return _last_groups(_accumulate_groups(x, growth_rate, num_layers, layer), out_block)


def d2_block_with_initial_layer(x, growth_rate, num_layers, scope_name, name="bottleneck",
                                test=True, comm=None, init_method=None, recompute=False):
    """MSS "dilated dense block 2": a 3x3 BN-ReLU-conv to ``growth_rate * num_layers``
    channels (scope ``{scope_name}/initial_layer/{name}``) followed by a
    :func:`d2_block` (scope ``{scope_name}/layers/layer{i}/{name}``). Returns
    ``growth_rate`` channels."""
    opts = dict(test=test, comm=comm, init_method=init_method, recompute=recompute)
    with nn.parameter_scope(scope_name):
        with nn.parameter_scope("initial_layer"):
            h = bn_conv(x, growth_rate * num_layers, name, kernel=3, pad=1, **opts)
        return d2_block(h, growth_rate, num_layers, name=name, **opts)


def d3_block(x, growth_rate, num_layers, n_blocks, test=True, comm=None, init_method=None,
             recompute=False):
    """D3 block of the music-source-separation D3Net.

    ``n_blocks`` D2 blocks densely connected with the same split/accumulate
    scheme as the layers inside a D2 block (:func:`_accumulate_groups`): an initial D2 block
    (scope ``initial_block``) makes ``growth_rate * n_blocks`` channels, in ``n_blocks``
    groups; D2 block ``i`` (scope ``layers/layer{i}``) reads group ``i - 1`` and adds its
    ``growth_rate * (n_blocks - i)`` output channels to the later groups. Returns the last
    ``growth_rate`` channels.
    """
    opts = dict(test=test, comm=comm, init_method=init_method, recompute=recompute)
    out = d2_block_with_initial_layer(x, growth_rate * n_blocks, num_layers, "initial_block",
                                      **opts)
    if n_blocks == 1:
        return out[:, -growth_rate:]

    def layer(i, head):
        return d2_block_with_initial_layer(head, growth_rate * (n_blocks - i - 1), num_layers,
                                           f"layers/layer{i + 1}", **opts)
    return _last_groups(_accumulate_groups(out, growth_rate, n_blocks, layer), 1)


def d2_block_bc(x, growth_rate, num_layers, out_block, block_comp, name="bottle_neck",
                test=True, comm=None, init_method=None, recompute=False):
    """Segmentation-backbone D2 block (official ``D3NetBC.dilated_dense_block_2``).

    Scope ``d2block/initial_layer``: an optional 1x1 bottleneck to
    ``4 * growth_rate`` channels (``bc_layer/{name}``, only when the input is
    wider than that) and a 3x3 layer to ``growth_rate * num_layers`` channels
    (``init_layer/{name}``); then a :func:`d2_block` in scope ``d2block``
    keeping ``out_block`` slices; finally ``block_dim_reduction``: BN
    (``norm1``) -> ReLU -> bias-free 1x1 conv (``conv1``) to
    ``int(growth_rate * out_block * block_comp)`` channels.
    """
    opts = dict(test=test, comm=comm, init_method=init_method, recompute=recompute)
    bc_ch = growth_rate * 4
    out = x
    with nn.parameter_scope("d2block"):
        with nn.parameter_scope("initial_layer"):
            if bc_ch < x.shape[1]:
                with nn.parameter_scope("bc_layer"):
                    out = bn_conv(out, bc_ch, name, kernel=1, pad=0, **opts)
            with nn.parameter_scope("init_layer"):
                out = bn_conv(out, growth_rate * num_layers, name, kernel=3, pad=1, **opts)
        out = d2_block(out, growth_rate, num_layers, name=name, kernel=3, out_block=out_block,
                       **opts)
    with nn.parameter_scope("block_dim_reduction"):
        out = batch_norm(out, "norm1", test=test, comm=comm)
        out = F.relu(out, inplace=True)
        out = conv2d(out, int(growth_rate * out_block * block_comp), "conv1", kernel=1,
                     bias=False, init_method=init_method, recompute=recompute)
    return out


def d3_block_dense(x, growth_rate, num_layers, n_blocks, out_block, block_comp, test=True,
                   comm=None, init_method=None, recompute=False):
    """Segmentation-backbone D3 block body: ``n_blocks`` :func:`d2_block_bc` in scopes
    ``d2_block/block{j}``, each output concatenated to the running features
    (DenseNet style). Returns the concatenation (input channels plus
    ``n_blocks * int(growth_rate * out_block * block_comp)``). Call it inside
    the ``dense{i}`` scope as the official backbone does."""
    out = x
    with nn.parameter_scope("d2_block"):
        for j in range(n_blocks):
            with nn.parameter_scope(f"block{j}"):
                h = d2_block_bc(out, growth_rate, num_layers, out_block, block_comp, test=test,
                                comm=comm, init_method=init_method, recompute=recompute)
            out = F.concatenate(out, h, axis=1)
    return out


class D3Layers:
    """The block functions with ``test`` / ``comm`` / ``init_method`` / ``recompute`` bound once.

    >>> L = D3Layers(test=True)
    >>> y = L.d3_block(x, growth_rate=16, num_layers=5, n_blocks=2)
    """

    def __init__(self, test=True, comm=None, init_method=None, recompute=False):
        self.test = test
        self.comm = comm
        self.init_method = init_method
        self.recompute = recompute

    def _opts(self):
        return dict(test=self.test, comm=self.comm, init_method=self.init_method,
                    recompute=self.recompute)

    def conv2d(self, x, out_channels, name, kernel=3, stride=1, dilation=1, pad=0, bias=True):
        return conv2d(x, out_channels, name, kernel=kernel, stride=stride, dilation=dilation,
                      pad=pad, bias=bias, init_method=self.init_method,
                      recompute=self.recompute)

    def batch_norm(self, x, name):
        return batch_norm(x, name, test=self.test, comm=self.comm)

    def bn_conv(self, x, out_channels, name, kernel=3, dilation=1, pad=None, stride=1):
        return bn_conv(x, out_channels, name, kernel=kernel, dilation=dilation, pad=pad,
                       stride=stride, **self._opts())

    def d2_block(self, x, growth_rate, num_layers, name="bottleneck", kernel=3, out_block=1):
        return d2_block(x, growth_rate, num_layers, name=name, kernel=kernel,
                        out_block=out_block, **self._opts())

    def d2_block_with_initial_layer(self, x, growth_rate, num_layers, scope_name,
                                    name="bottleneck"):
        return d2_block_with_initial_layer(x, growth_rate, num_layers, scope_name, name=name,
                                           **self._opts())

    def d3_block(self, x, growth_rate, num_layers, n_blocks):
        return d3_block(x, growth_rate, num_layers, n_blocks, **self._opts())

    def d2_block_bc(self, x, growth_rate, num_layers, out_block, block_comp, name="bottle_neck"):
        return d2_block_bc(x, growth_rate, num_layers, out_block, block_comp, name=name,
                           **self._opts())

    def d3_block_dense(self, x, growth_rate, num_layers, n_blocks, out_block, block_comp):
        return d3_block_dense(x, growth_rate, num_layers, n_blocks, out_block, block_comp,
                              **self._opts())


def ceil_channels(rate, channels):
    """``ceil(rate * channels)`` as the official compression arithmetic computes it."""
    return int(math.ceil(rate * channels))
