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

A :class:`Tangent` passed to a model adds, to every layer's output, ``e_j`` times the
derivative of that output in the parameter direction ``u`` (for conv/affine layers
``conv(x, U_W) + U_b``, for the normalization ``U_gamma * x_hat + U_beta``; all layers
are linear in their parameters). With ``e = 0`` the output is unchanged and the
gradient of sum_j l_j with respect to ``e_j`` is <grad_theta l_j, u>: every per-sample
directional derivative from one ordinary forward and backward pass (forward-mode
differentiation without a second-order graph).
"""
import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
from nnabla.initializer import ConstantInitializer
from nnabla.parameter import get_parameter_or_create

from common.errors import UserError

BN_MODES = ("batch", "sample", "test")
BN_EPS = 1e-5


class Tangent:
    """Per-sample scales ``e`` (N,) and a direction ``u`` (Variables keyed like
    ``nn.get_parameters()``) for the forward-mode trick described above."""

    def __init__(self, e, u_by_name):
        import nnabla as nn
        params = nn.get_parameters(grad_only=False)
        self.e = e
        self._u = {id(params[k]): v for k, v in u_by_name.items() if k in params}

    def u(self, scope_param):
        """The direction for a parameter given by its name relative to the current scope."""
        var = nn.get_parameters(grad_only=False)[scope_param]
        return self._u[id(var)]

    def add(self, out, delta):
        scale = F.reshape(self.e, (self.e.shape[0],) + (1,) * (out.ndim - 1))
        return out + scale * delta


def _conv(h, maps, tangent):
    out = PF.convolution(h, maps, (3, 3), pad=(1, 1))
    if tangent is None:
        return out
    delta = F.convolution(h, tangent.u("conv/W"), tangent.u("conv/b"), pad=(1, 1))
    return tangent.add(out, delta)


def _affine(h, n_out, tangent):
    out = PF.affine(h, n_out)
    if tangent is None:
        return out
    return tangent.add(out, F.affine(h, tangent.u("affine/W"), tangent.u("affine/b")))


def batch_norm(h, mode, tangent=None):
    """Batch normalization with the parameter names of ``PF.batch_normalization``."""
    if mode not in BN_MODES:
        raise ValueError(f"bn mode {mode!r}")
    if tangent is not None and mode != "sample":
        raise ValueError("the tangent trick needs per-sample statistics (mode 'sample')")
    if mode != "sample":
        return PF.batch_normalization(h, batch_stat=mode == "batch", eps=BN_EPS)
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
    out = normalized * gamma + beta
    if tangent is None:
        return out
    return tangent.add(out, normalized * tangent.u("bn/gamma") + tangent.u("bn/beta"))


def cnn(x, n_classes, bn="batch", tangent=None):
    h = x
    for name, maps in (("block1", 32), ("block2", 64), ("block3", 128)):
        with nn.parameter_scope(name):
            with nn.parameter_scope("conv1"):
                h = F.relu(batch_norm(_conv(h, maps, tangent), bn, tangent))
            with nn.parameter_scope("conv2"):
                h = F.relu(_conv(h, maps, tangent))
                h = F.max_pooling(h, (2, 2), (2, 2))
    return _affine(h, n_classes, tangent)


def mlp(x, n_classes, bn="batch", tangent=None, hidden=64):
    with nn.parameter_scope("hidden"):
        h = F.relu(_affine(x, hidden, tangent))
    with nn.parameter_scope("out"):
        return _affine(h, n_classes, tangent)


def logreg(x, n_classes, bn="batch", tangent=None):
    with nn.parameter_scope("out"):
        return _affine(x, n_classes, tangent)


MODELS = {"cnn": cnn, "mlp": mlp, "logreg": logreg}


def build(name, x, n_classes, bn="batch", tangent=None):
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; use one of {', '.join(MODELS)}")
    return MODELS[name](x, n_classes, bn=bn, tangent=tangent)


def per_sample_loss(logits, label):
    """Cross-entropy of every sample, shape (N,)."""
    return F.reshape(F.softmax_cross_entropy(logits, label), (logits.shape[0],))
