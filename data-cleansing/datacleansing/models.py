"""Classifiers for data cleansing: the reference CNN, a small MLP and logistic regression.

``cnn`` is the network of the reference implementation (three blocks of
conv-BN-ReLU, conv-ReLU, 2x2 max-pool with 32/64/128 channels, then a linear
layer). Its batch normalization runs in one of three modes:

* ``"batch"``: statistics of the whole minibatch (training);
* ``"sample"``: statistics of each sample on its own, i.e. exactly what the
  batch-statistics layer computes for a minibatch of one. The reference scores a
  sample by its gradient computed *alone* (batch size 1, training mode); this mode
  gives every sample of a batch that same gradient in one pass, because the samples
  no longer interact;
* ``"test"``: the running statistics (evaluation, and the validation gradient).

The MLP and logistic regression have no batch normalization: per-sample gradients are
the same in every mode.

Two objects add per-sample derivatives along a parameter direction ``u`` to a model (the
``probe`` argument); both rely on every layer being linear in its own parameters, so the
derivative of a layer's output y along u is the layer applied with u's parameters
(``conv(x, U_W) + U_b``, ``U_gamma * x_hat + U_beta``):

* :class:`Tangent` (forward mode) adds ``e_j`` times that derivative to every layer's
  output. With ``e = 0`` the output is unchanged and the gradient of sum_j l_j with respect
  to ``e_j`` is <grad_theta l_j, u>;
* :class:`LayerProbe` (reverse mode) leaves the network as it is and keeps, for every
  layer, its output y and y's derivative along u. After one backward pass of sum_j l_j
  without weight gradients, <grad_theta l_j, u> = sum over layers of <dl_j/dy_j, dy_j along
  u>: the weight-gradient step of backpropagation contracted with u, per sample, for the
  cost of one more forward pass of each layer. Its batch normalization is nnabla's own
  (fused) layer with each sample's channels as separate channels, which computes exactly
  what the batch-statistics layer computes for a minibatch of one.
"""
import nnabla as nn
import numpy as np
import nnabla.functions as F
import nnabla.parametric_functions as PF
from nnabla.initializer import ConstantInitializer
from nnabla.parameter import get_parameter_or_create

from common.errors import UserError

BN_MODES = ("batch", "sample", "test")
BN_EPS = 1e-5


def _scoped(name):
    """The existing parameter ``name`` of the current parameter scope."""
    return nn.get_parameters(grad_only=False)[name]


class _Direction:
    """A direction ``u`` in parameter space: Variables keyed like ``nn.get_parameters()``."""

    def __init__(self, u_by_name):
        params = nn.get_parameters(grad_only=False)
        self._u = {id(params[k]): v for k, v in u_by_name.items() if k in params}

    def u(self, scope_param):
        """The direction for a parameter given by its name relative to the current scope."""
        return self._u[id(_scoped(scope_param))]


class Tangent(_Direction):
    """Forward mode: per-sample scales ``e`` (N,) times the derivative along ``u`` added to
    every layer's output (see the module docstring)."""

    def __init__(self, e, u_by_name):
        super().__init__(u_by_name)
        self.e = e

    def add(self, out, delta):
        scale = F.reshape(self.e, (self.e.shape[0],) + (1,) * (out.ndim - 1))
        return out + scale * delta

    def layer(self, h, scope, op):
        out = op(h, _scoped(scope + "/W"), _scoped(scope + "/b"))
        return self.add(out, op(h, self.u(scope + "/W"), self.u(scope + "/b")))

    def batch_norm(self, h):
        normalized, out = _composite_batch_norm(h)
        return self.add(out, normalized * self.u("bn/gamma") + self.u("bn/beta"))


class LayerProbe(_Direction):
    """Reverse mode: keeps every layer's output and its derivative along ``u`` (see the module
    docstring). Use: build the model with the probe; per batch, :meth:`feed`, the forward
    pass of the summed per-sample losses and of :attr:`outputs`, the backward pass of the
    losses, then :meth:`dots`."""

    def __init__(self, u_by_name):
        super().__init__(u_by_name)
        self.layers = []      # (output y, dy along u), both kept after the passes
        self.norms = []       # (parameter, per-sample copy, u) of every batch-norm beta, gamma
        self._biases = []     # bias copies whose gradient is computed (and discarded)

    def layer(self, h, scope, op):
        # The parameters are used without gradients: only the outputs' gradients are needed.
        # A layer whose input carries no gradient (the first) takes a copy of its bias that
        # does (sharing the values; a cheap sum), so that its output gets a gradient.
        weight, bias = (_scoped(f"{scope}/{p}") for p in "Wb")
        if h.need_grad:
            bias = bias.get_unlinked_variable(need_grad=False)
        else:
            values, bias = bias.data, nn.Variable(bias.shape, need_grad=True)
            bias.data = values
            self._biases.append(bias)
        out = op(h, weight.get_unlinked_variable(need_grad=False), bias)
        along_u = op(h, self.u(scope + "/W"), self.u(scope + "/b"))
        out.persistent = along_u.persistent = True
        self.layers.append((out, along_u))
        return out

    def batch_norm(self, h):
        """nnabla's batch normalization over (1, N*C, H, W): every sample's channels are
        normalized with their own statistics; beta and gamma are per-sample copies whose
        gradients are the per-sample parameter gradients."""
        n, c = h.shape[:2]
        shape = (1, n * c, 1, 1)
        copies = {}
        for name in ("beta", "gamma"):
            copies[name] = nn.Variable(shape, need_grad=True)
            self.norms.append((_scoped(f"bn/{name}"), copies[name], self.u(f"bn/{name}")))
        unused_mean, unused_var = nn.Variable(shape), nn.Variable(shape)   # running statistics
        out = F.batch_normalization(F.reshape(h, shape[:2] + h.shape[2:]), copies["beta"],
                                    copies["gamma"], unused_mean, unused_var, axes=[1],
                                    batch_stat=True, eps=BN_EPS)
        return F.reshape(out, h.shape)

    @property
    def outputs(self):
        return [along_u for _, along_u in self.layers]

    def feed(self, n):
        """Copy the current batch-norm parameters into the per-sample copies (batch of ``n``)
        and clear the gradients of all copies (a backward pass adds to them)."""
        for param, copy, _ in self.norms:
            copy.d = np.tile(param.d, (1, n, 1, 1))
            copy.grad.zero()
        for bias in self._biases:
            bias.grad.zero()

    def dots(self, n):
        """<grad l_j, u> for the ``n`` samples, after the backward pass."""
        total = np.zeros(n)
        for out, along_u in self.layers:
            total += np.einsum("ij,ij->i", out.g.reshape(n, -1).astype(np.float64),
                               along_u.d.reshape(n, -1))
        for _, copy, u in self.norms:
            total += copy.g.reshape(n, -1).astype(np.float64) @ u.d.reshape(-1)
        return total


def _conv2d(h, w, b):
    return F.convolution(h, w, b, pad=(1, 1))


def _conv(h, maps, probe):
    if probe is None:
        return PF.convolution(h, maps, (3, 3), pad=(1, 1))
    return probe.layer(h, "conv", _conv2d)


def _affine(h, n_out, probe):
    if probe is None:
        return PF.affine(h, n_out)
    return probe.layer(h, "affine", F.affine)


def _composite_batch_norm(h):
    """Per-sample statistics from elementary functions: (x_hat, gamma * x_hat + beta)."""
    shape = (1, h.shape[1], 1, 1)
    with nn.parameter_scope("bn"):
        beta = get_parameter_or_create("beta", shape, ConstantInitializer(0), True)
        gamma = get_parameter_or_create("gamma", shape, ConstantInitializer(1), True)
        get_parameter_or_create("mean", shape, ConstantInitializer(0), False)
        get_parameter_or_create("var", shape, ConstantInitializer(1), False)
    mean = F.mean(h, axis=(2, 3), keepdims=True)
    centered = h - mean
    var = F.mean(centered ** 2, axis=(2, 3), keepdims=True)
    normalized = centered / (var + BN_EPS) ** 0.5
    return normalized, normalized * gamma + beta


def batch_norm(h, mode, probe=None):
    """Batch normalization with the parameter names of ``PF.batch_normalization``."""
    if mode not in BN_MODES:
        raise ValueError(f"bn mode {mode!r}")
    if probe is not None and mode != "sample":
        raise ValueError("per-sample derivatives need per-sample statistics (mode 'sample')")
    if mode != "sample":
        return PF.batch_normalization(h, batch_stat=mode == "batch", eps=BN_EPS)
    if probe is not None:
        return probe.batch_norm(h)
    return _composite_batch_norm(h)[1]


def cnn(x, n_classes, bn="batch", probe=None):
    h = x
    for name, maps in (("block1", 32), ("block2", 64), ("block3", 128)):
        with nn.parameter_scope(name):
            with nn.parameter_scope("conv1"):
                h = F.relu(batch_norm(_conv(h, maps, probe), bn, probe))
            with nn.parameter_scope("conv2"):
                h = F.relu(_conv(h, maps, probe))
                h = F.max_pooling(h, (2, 2), (2, 2))
    return _affine(h, n_classes, probe)


def mlp(x, n_classes, bn="batch", probe=None, hidden=64):
    with nn.parameter_scope("hidden"):
        h = F.relu(_affine(x, hidden, probe))
    with nn.parameter_scope("out"):
        return _affine(h, n_classes, probe)


def logreg(x, n_classes, bn="batch", probe=None):
    with nn.parameter_scope("out"):
        return _affine(x, n_classes, probe)


MODELS = {"cnn": cnn, "mlp": mlp, "logreg": logreg}


def build(name, x, n_classes, bn="batch", probe=None):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")
    return MODELS[name](x, n_classes, bn=bn, probe=probe)


def per_sample_loss(logits, label):
    """Cross-entropy of every sample, shape (N,)."""
    return F.reshape(F.softmax_cross_entropy(logits, label), (logits.shape[0],))
