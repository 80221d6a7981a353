"""The shared D3Net blocks (``d3net_blocks``) against the official split-and-accumulate scheme.

``d2_block`` / ``d3_block`` keep the channel groups no layer has read yet as one tensor
instead of the official per-group slices and the final concatenation; these tests spell the
official scheme out and require identical outputs and gradients (parameters and input), in
training and test mode, for the MSS blocks and the segmentation D2 block (several kept
groups)."""
import numpy as np
import pytest

nn = pytest.importorskip("nnabla")
import nnabla.functions as F  # noqa: E402

from d3net_blocks import blocks  # noqa: E402


def _official_groups(x, width, count, layer):
    groups = [x[:, k * width:(k + 1) * width] for k in range(count)]
    for i in range(count - 1):
        h = layer(i, groups[i])
        for j in range(count - i - 1):
            groups[i + 1 + j] = groups[i + 1 + j] + h[:, j * width:(j + 1) * width]
    return F.concatenate(*groups, axis=1)


def official_d2_block(x, growth_rate, num_layers, name="bottleneck", kernel=3, out_block=1,
                      test=True, comm=None, init_method=None, recompute=False):
    if num_layers == 1:
        return x[:, -out_block * growth_rate:]

    def layer(i, head):
        d = 2 ** (i + 1)
        with nn.parameter_scope(f"layers/layer{i + 1}"):
            return blocks.bn_conv(head, growth_rate * (num_layers - i - 1), name, kernel=kernel,
                                  dilation=d, pad=d, test=test, comm=comm,
                                  init_method=init_method, recompute=recompute)
    out = _official_groups(x, growth_rate, num_layers, layer)
    return out[:, -out_block * growth_rate:]


def official_d3_block(x, growth_rate, num_layers, n_blocks, test=True, comm=None,
                      init_method=None, recompute=False):
    opts = dict(test=test, comm=comm, init_method=init_method, recompute=recompute)
    out = blocks.d2_block_with_initial_layer(x, growth_rate * n_blocks, num_layers,
                                             "initial_block", **opts)
    if n_blocks == 1:
        return out[:, -growth_rate:]

    def layer(i, head):
        return blocks.d2_block_with_initial_layer(head, growth_rate * (n_blocks - i - 1),
                                                  num_layers, f"layers/layer{i + 1}", **opts)
    return _official_groups(out, growth_rate, n_blocks, layer)[:, -growth_rate:]


def _values_and_gradients(build, x, test):
    """Output, input gradient and parameter gradients of ``sum(build(x) ** 2)``, with every
    parameter drawn from one seed (so both implementations get the same values)."""
    nn.clear_parameters()
    xv = nn.Variable.from_numpy_array(x, need_grad=True)
    y = build(xv, test)
    rng = np.random.RandomState(1)
    for name, p in sorted(nn.get_parameters(grad_only=False).items()):
        p.d = rng.uniform(0.5, 1.5, p.shape) if name.endswith("/var") else rng.randn(*p.shape)
    loss = F.sum(y ** 2)
    loss.forward()
    for p in nn.get_parameters(grad_only=False).values():
        p.grad.zero()
    xv.grad.zero()
    loss.backward()
    grads = {k: p.g.copy() for k, p in nn.get_parameters().items()}
    return y.d.copy(), xv.g.copy(), grads


CASES = {
    # (block, official, growth_rate, num_layers, extra, input channels)
    "d2, one kept group": (blocks.d2_block, official_d2_block, 3, 4, {"out_block": 1}, 12),
    "d2, three kept groups": (blocks.d2_block, official_d2_block, 2, 5, {"out_block": 3}, 10),
    "d2, single layer": (blocks.d2_block, official_d2_block, 4, 1, {"out_block": 1}, 4),
    "d3": (blocks.d3_block, official_d3_block, 2, 3, {"n_blocks": 3}, 5),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("test", [True, False], ids=["test mode", "training mode"])
def test_blocks_equal_the_official_scheme(case, test):
    block, official, growth, layers, extra, channels = CASES[case]
    x = np.random.RandomState(0).randn(2, channels, 16, 12).astype(np.float32)
    results = []
    for fn in (block, official):
        def build(xv, test, fn=fn):
            saved = blocks.d2_block
            blocks.d2_block = official_d2_block if fn is official else saved
            try:
                return fn(xv, growth, layers, test=test, **extra)
            finally:
                blocks.d2_block = saved
        results.append(_values_and_gradients(build, x, test))
    (y, dx, grads), (y_ref, dx_ref, grads_ref) = results
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    assert grads.keys() == grads_ref.keys() and (layers == 1 or grads)
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_ref[name], err_msg=name)
