"""Influence functions (Koh & Liang, ICML 2017) as the reference's ``eval_influence_functions.py``
(``influence_functions/infl.py``) computes them, in this package's sign convention.

At the final parameters, with the evaluation-mode network (batch normalization with its running
statistics, so samples do not interact):

    u = grad L_val                      (mean loss over the validation split)
    v = (H + damping * I)^-1 u          (H: Hessian of the mean training loss)
    score_i = <grad l_i, v> / n         (n training samples, every one scored)

v is found as the reference finds it: momentum SGD (learning rate 0.005, momentum 0.9, two
epochs of the training minibatches, shuffled and augmented as in training) on the quadratic
0.5 <v, (H_B + damping I) v> - <u, v> of every minibatch B; its gradient (H_B + damping I) v - u
needs one Hessian-vector product per step. The damping is the reference's: 10 for CIFAR-10, 0.1
otherwise. With one full batch per epoch and enough epochs the solver reaches the exact solve
(tested against a dense Hessian); with the reference's two epochs it is an approximation.

Removing sample i changes the minimizer by about H^-1 grad l_i / n and the validation loss by
score_i, so, as for the other methods here, a negative score means that removing the sample
lowers the validation loss: the sample is harmful. The reference writes -score_i (Koh &
Liang's I_up,loss / n) into its CSV and removes its lowest values first.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacleansing import data as D
from datacleansing.models import build, per_sample_loss
from datacleansing.trace import TrainConfig, bar, load_snapshot, read_params


@dataclass(frozen=True)
class Solver:
    """The iterative solve of (H + damping I) v = u (the reference's settings by default)."""
    epochs: int = 2
    lr: float = 0.005
    momentum: float = 0.9
    batch_size: int = 0           # 0: the run's training batch size


def default_damping(dataset):
    """The reference's damping: 10 for CIFAR-10, 0.1 for the other datasets."""
    return 10.0 if dataset == "cifar10" else 0.1


class _Graphs:
    """Evaluation-mode graphs of one model per batch size: Hessian-vector products of the mean
    loss, and per-sample products <grad l_j, w> by double backprop."""

    def __init__(self, model, splits, names):
        self.model, self.splits, self.names = model, splits, names
        self._hvp, self._dots = {}, {}

    def _build(self, n, weights):
        import nnabla as nn
        import nnabla.functions as F
        x, y = nn.Variable((n,) + self.splits.image_shape), nn.Variable((n, 1))
        losses = per_sample_loss(build(self.model, x, self.splits.n_classes, bn="test"), y)
        params = nn.get_parameters(grad_only=False)
        w = {k: nn.Variable(params[k].shape) for k in self.names}
        weighted = F.sum(losses * weights) if weights is not None else F.mean(losses)
        grads = nn.grad([weighted], [params[k] for k in self.names])
        s = F.add_n(*[F.sum(g * w[k]) for k, g in zip(self.names, grads)])
        return x, y, w, s

    def hvp(self, n):
        """(x, y, w, s): backward of s = <grad mean_j l_j, w> leaves H w in the gradients."""
        if n not in self._hvp:
            self._hvp[n] = self._build(n, None)
        return self._hvp[n]

    def dots(self, n):
        """(x, y, w, e, s): d s / d e_j = <grad l_j, w> for s = <grad sum_j e_j l_j, w>."""
        if n not in self._dots:
            import nnabla as nn
            e = nn.Variable((n,), need_grad=True)
            self._dots[n] = self._build(n, e) + (e,)
        return self._dots[n]


def _feed(x_var, y_var, w_vars, x, y, w):
    x_var.d, y_var.d = x, y.reshape(-1, 1)
    for k, var in w_vars.items():
        var.d = w[k]


def hessian_vector(graphs, w, x, y):
    """H w of the mean loss of (x, y), evaluation mode, at the current parameters."""
    import nnabla as nn
    xv, yv, wv, s = graphs.hvp(len(y))
    _feed(xv, yv, wv, x, y, w)
    params = nn.get_parameters(grad_only=False)
    for k in graphs.names:
        params[k].grad.zero()
    s.forward(clear_no_need_grad=True)
    s.backward(clear_buffer=True)
    return {k: params[k].g.astype(np.float64) for k in graphs.names}


def sample_dots(graphs, w, x, y, batch=256):
    """<grad l_j, w> for every sample j of (x, y) (evaluation mode)."""
    out = np.empty(len(y))
    for start in range(0, len(y), batch):
        xb, yb = x[start:start + batch], y[start:start + batch]
        xv, yv, wv, s, e = graphs.dots(len(yb))
        _feed(xv, yv, wv, xb, yb, w)
        e.d = 1.0
        e.grad.zero()
        s.forward(clear_no_need_grad=True)
        s.backward(clear_buffer=True)
        out[start:start + len(yb)] = e.g
    return out


def solve(graphs, u, x_train, labels, damping, solver, batch_size, shift=0, flip=False, seed=0,
          quiet=True):
    """v ~ (H + damping I)^-1 u by momentum SGD over shuffled (augmented) training minibatches."""
    n = len(labels)
    v = {k: np.zeros_like(u[k], dtype=np.float64) for k in u}
    velocity = {k: np.zeros_like(v[k]) for k in u}
    batches = [(epoch, start) for epoch in range(solver.epochs)
               for start in range(0, n, batch_size)]
    order = None
    for epoch, start in bar(batches, quiet, desc="influence functions: solving", unit="step"):
        if start == 0:
            order = np.random.default_rng([seed, epoch]).permutation(n)
        idx = order[start:start + batch_size]
        x = D.augment(x_train[idx], epoch * n + idx, shift, flip)
        hv = hessian_vector(graphs, {k: v[k].astype(np.float32) for k in v}, x, labels[idx])
        for k in v:     # nnabla's Momentum: velocity = m * velocity + lr * grad; v -= velocity
            velocity[k] = solver.momentum * velocity[k] + solver.lr * (
                hv[k] + damping * v[k] - u[k])
            v[k] -= velocity[k]
    return v


def compute_influence_functions(run, splits, model, labels, cfg, dataset, damping=None,
                                solver=Solver(), quiet=False):
    """Influence-function score of every training sample of the trained run folder ``run``."""
    import nnabla as nn

    from datacleansing.influence import _trained, validation_gradient
    damping = default_damping(dataset) if damping is None else damping
    cfg = TrainConfig(model=model) if cfg is None else cfg
    nn.clear_parameters()
    build(model, nn.Variable((1,) + splits.image_shape), splits.n_classes, bn="test")
    load_snapshot(read_params(Path(run) / "params" / "final.h5"))
    u = {k: g.astype(np.float64) for k, g in validation_gradient(model, splits).items()}
    graphs = _Graphs(model, splits, _trained(nn.get_parameters(grad_only=False)))
    v = solve(graphs, u, splits.x_train, labels, damping, solver,
              solver.batch_size or cfg.batch_size, getattr(cfg, "shift", 0),
              getattr(cfg, "flip", False), cfg.seed, quiet)
    w = {k: v[k].astype(np.float32) for k in v}
    return sample_dots(graphs, w, splits.x_train, labels) / len(labels)
