"""SGD-influence (Hara et al., NeurIPS 2019) and its storage-efficient variant.

Removing training sample i from step t of SGD would have changed the parameters after
that step by +lr_t/|S_t| * grad l_i(theta_t); the change propagates to the end of
training through the linearized updates (I - lr_s H_s) of the later steps, and the
validation loss changes by <u, .> with u the validation-loss gradient at the final
parameters. Walking the traced steps backwards:

    u <- grad L_val(theta_final)                      (test-mode network, mean over val)
    for t = T-1 .. first traced step:
        score[i] += lr_t / |S_t| * <u, grad l_i(theta_t)>     for every i in S_t
        u        <- u - lr_t * c_t * H_t u

with H_t the Hessian of the step's mean training loss (a Hessian-vector product by
double backprop). A negative score means removing the sample lowers the validation
loss: the sample is harmful. ``theta_t`` is the parameter vector before step t
(``method="hara"``, needs a parameter copy per step) or the final one for every step
(``method="final"``, the storage-efficient method of Suzuki et al.).

``hessian="reference"`` uses c_t = 1/|S_t| on top of the mean loss's Hessian, as the
reference implementation does (a second division by the batch size);
``hessian="textbook"`` uses c_t = 1, the linearization of the SGD update itself.

Per-sample gradients are those of the sample *alone* through the training-mode network
(the reference runs a minibatch of one). Four implementations compute the per-sample dot
products <u, grad l_j> of a step, all to float rounding the same numbers:

* ``impl="reverse"`` (the default, the fastest for every model here): one forward and one
  backward pass of the whole batch without weight gradients; every layer's output
  gradient is contracted per sample with the layer's output derivative along u
  (``models.LayerProbe``). At most the arithmetic of the loop (a forward pass of every
  layer along u replaces its weight gradient), without its per-sample calls;
* ``impl="loop"``: one sample at a time, as the reference;
* ``impl="batched"``: forward-mode tangents: every layer adds e_j times its derivative along
  u (``models.Tangent``) and d(sum_j l_j)/de_j = <grad l_j, u>;
* ``impl="double"``: double backprop, d/dv_j <grad_theta sum_j v_j l_j, u>, a cross-check.

The batched implementations need samples that do not interact; batch normalization with
batch statistics couples them, so they normalize every sample with its own statistics,
which is exactly the minibatch-of-one computation (``models.batch_norm``, mode "sample";
``reverse`` with nnabla's fused layer as the loop, ``batched`` and ``double`` with a
composite of elementary functions, whose float32 variance differs from the fused layer's
E[x^2] - E[x]^2 by rounding). The Hessian-vector product keeps the coupled whole-batch
statistics, as in training.
"""
from pathlib import Path

import numpy as np

from common.errors import UserError
from datacleansing import data as D
from datacleansing.models import build, per_sample_loss
from datacleansing.trace import bar, load_snapshot, read_params, read_trace

# The scoring methods, by name: the registry score.py, sweep.py, cleanse.py and the tools offer.
# final, hara: this module; influence-functions: Koh & Liang (``influence_functions``);
# confident-learning: cleanlab (``confident_learning``); cross-validated: cleanse.py's default
# (label quality of out-of-fold predictions of the model, ``cleanse``); random: a seeded baseline.
METHODS = ("final", "hara", "influence-functions", "confident-learning", "cross-validated",
           "random")
# The methods that walk the traced SGD steps (they take --impl and --hessian).
SGD_METHODS = ("final", "hara")
IMPLS = ("reverse", "loop", "batched", "double")
DEFAULT_IMPL = "reverse"
HESSIANS = ("reference", "textbook")


def _trained(params):
    """Names of the trained parameters (batch-norm running statistics excluded)."""
    return [k for k in params if not k.endswith(("/mean", "/var"))]


class InfluenceGraphs:
    """Graphs of one model, built once per batch size and reused for every step."""

    def __init__(self, model, splits):
        self.model, self.splits = model, splits
        self._dots, self._tangent, self._reverse, self._hvp = {}, {}, {}, {}
        self._loop = None

    def _params(self):
        import nnabla as nn
        params = nn.get_parameters(grad_only=False)
        names = _trained(params)
        return names, [params[k] for k in names]

    def _u_vars(self, names, params):
        import nnabla as nn
        return {k: nn.Variable(p.shape, need_grad=False) for k, p in zip(names, params)}

    def dots(self, n):
        """(x, y, v, u_vars, s): s = <grad sum_j v_j l_j, u>, per-sample normalization."""
        if n not in self._dots:
            import nnabla as nn
            import nnabla.functions as F
            x = nn.Variable((n,) + self.splits.image_shape)
            y = nn.Variable((n, 1))
            v = nn.Variable((n,), need_grad=True)
            logits = build(self.model, x, self.splits.n_classes, bn="sample")
            total = F.sum(per_sample_loss(logits, y) * v)
            names, params = self._params()
            grads = nn.grad([total], params)
            u = self._u_vars(names, params)
            s = F.add_n(*[F.sum(g * u[k]) for k, g in zip(names, grads)])
            self._dots[n] = (x, y, v, u, s)
        return self._dots[n]

    def tangent(self, n):
        """(x, y, e, u_vars, total): d total / d e_j = <grad l_j, u> (per-sample statistics)."""
        if n not in self._tangent:
            import nnabla as nn
            import nnabla.functions as F

            from datacleansing.models import Tangent
            x = nn.Variable((n,) + self.splits.image_shape)
            y = nn.Variable((n, 1))
            e = nn.Variable((n,), need_grad=True)
            names, params = self._params()
            u = self._u_vars(names, params)
            logits = build(self.model, x, self.splits.n_classes, bn="sample",
                           probe=Tangent(e, u))
            total = F.sum(per_sample_loss(logits, y))
            self._tangent[n] = (x, y, e, u, total)
        return self._tangent[n]

    def reverse(self, n):
        """(x, y, u_vars, probe, loss, outputs): backward of loss = sum_j l_j (per-sample
        statistics) leaves what ``probe.dots`` needs; ``outputs`` runs the forward pass."""
        if n not in self._reverse:
            import nnabla as nn
            import nnabla.functions as F

            from datacleansing.models import LayerProbe
            x = nn.Variable((n,) + self.splits.image_shape)
            y = nn.Variable((n, 1))
            names, params = self._params()
            u = self._u_vars(names, params)
            probe = LayerProbe(u)
            logits = build(self.model, x, self.splits.n_classes, bn="sample", probe=probe)
            loss = F.sum(per_sample_loss(logits, y))
            self._reverse[n] = (x, y, u, probe, loss, F.sink(loss, *probe.outputs))
        return self._reverse[n]

    def hvp(self, n):
        """(x, y, u_vars, s): s = <grad mean_j l_j, u> with whole-batch statistics;
        backward of s leaves H u in the parameters' gradients."""
        if n not in self._hvp:
            import nnabla as nn
            import nnabla.functions as F
            x = nn.Variable((n,) + self.splits.image_shape)
            y = nn.Variable((n, 1))
            logits = build(self.model, x, self.splits.n_classes, bn="batch")
            loss = F.mean(per_sample_loss(logits, y))
            names, params = self._params()
            grads = nn.grad([loss], params)
            u = self._u_vars(names, params)
            s = F.add_n(*[F.sum(g * u[k]) for k, g in zip(names, grads)])
            self._hvp[n] = (x, y, u, s)
        return self._hvp[n]

    def loop(self):
        """(x, y, loss) for one sample in training mode (batch statistics of that sample)."""
        if self._loop is None:
            import nnabla as nn
            x = nn.Variable((1,) + self.splits.image_shape)
            y = nn.Variable((1, 1))
            logits = build(self.model, x, self.splits.n_classes, bn="batch")
            self._loop = (x, y, per_sample_loss(logits, y))
        return self._loop


def validation_gradient(model, splits, batch=250):
    """Gradient of the mean validation loss (test-mode network) at the current parameters."""
    import nnabla as nn
    import nnabla.functions as F
    names = _trained(nn.get_parameters(grad_only=False))
    params = nn.get_parameters(grad_only=False)
    u = {k: np.zeros(params[k].shape, np.float64) for k in names}
    graphs = {}
    n = len(splits.y_val)
    for start in range(0, n, batch):
        xb, yb = splits.x_val[start:start + batch], splits.y_val[start:start + batch]
        if len(yb) not in graphs:
            xv, yv = nn.Variable(xb.shape), nn.Variable((len(yb), 1))
            graphs[len(yb)] = (xv, yv, F.sum(per_sample_loss(
                build(model, xv, splits.n_classes, bn="test"), yv)))
        xv, yv, loss = graphs[len(yb)]
        xv.d, yv.d = xb, yb.reshape(-1, 1)
        for k in names:
            params[k].grad.zero()
        loss.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)
        for k in names:
            u[k] += params[k].g
    return {k: (v / n).astype(np.float32) for k, v in u.items()}


def _feed(xv, yv, uv, x, y, u):
    """Put a step's images, labels and the direction ``u`` into a graph's inputs."""
    xv.d, yv.d = x, y.reshape(-1, 1)
    for k, var in uv.items():
        var.d = u[k]


def step_dots(graphs, u, x, y, impl):
    """<u, grad l_j(theta)> for every sample j of a step (current parameters)."""
    import nnabla as nn
    if impl == "reverse":
        xv, yv, uv, probe, loss, outputs = graphs.reverse(len(y))
        _feed(xv, yv, uv, x, y, u)
        probe.feed(len(y))
        outputs.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)
        return probe.dots(len(y))
    if impl == "batched":
        xv, yv, e, uv, total = graphs.tangent(len(y))
        _feed(xv, yv, uv, x, y, u)
        e.d = 0.0
        params = nn.get_parameters(grad_only=False)
        saved = {k: p.need_grad for k, p in params.items()}
        for p in params.values():      # only d/de is wanted: skip the weight gradients
            p.need_grad = False
        try:
            e.grad.zero()
            total.forward(clear_no_need_grad=True)
            total.backward(clear_buffer=True)
        finally:
            for k, p in params.items():
                p.need_grad = saved[k]
        return e.g.astype(np.float64).copy()
    if impl == "double":
        xv, yv, v, uv, s = graphs.dots(len(y))
        _feed(xv, yv, uv, x, y, u)
        v.d = 1.0
        v.grad.zero()
        s.forward(clear_no_need_grad=True)
        s.backward(clear_buffer=True)
        return v.g.astype(np.float64).copy()
    xv, yv, loss = graphs.loop()
    params = nn.get_parameters(grad_only=False)
    names = list(u)
    out = np.empty(len(y))
    for j in range(len(y)):
        xv.d, yv.d = x[j:j + 1], y[j:j + 1].reshape(1, 1)
        for k in names:
            params[k].grad.zero()
        loss.forward(clear_no_need_grad=True)
        loss.backward(clear_buffer=True)
        out[j] = sum(float(np.sum(params[k].g.astype(np.float64) * u[k])) for k in names)
    return out


def hessian_vector(graphs, u, x, y):
    """H u for the step's mean training loss (whole-batch statistics)."""
    import nnabla as nn
    xv, yv, uv, s = graphs.hvp(len(y))
    _feed(xv, yv, uv, x, y, u)
    params = nn.get_parameters(grad_only=False)
    for k in u:
        params[k].grad.zero()
    s.forward(clear_no_need_grad=True)
    s.backward(clear_buffer=True)
    return {k: params[k].g.copy() for k in u}


def step_batch(splits, labels, step, cfg):
    """The images (augmented as in training) and labels of a traced step."""
    x = D.augment(splits.x_train[step.batch], step.seeds, getattr(cfg, "shift", 0),
                  getattr(cfg, "flip", False))
    return x, labels[step.batch]


def cross_validated_scores(run, splits, model, labels, seed=0, settings=None, quiet=False):
    """cleanse.py's default scoring of the training set: label quality of the out-of-fold
    predictions of ``model`` (``settings``: cleanse.py's options, its defaults when None,
    silent with ``quiet``); the fold models train in ``run/cross-validated/seed<seed>/`` and
    are reused when scored again with that seed."""
    from datacleansing import cleanse
    if settings is None:
        settings = cleanse.default_settings(model, seed)
        settings.quiet = quiet
    labels = np.asarray(labels)
    work = Path(run) / "cross-validated" / f"seed{settings.seed}"
    return cleanse.label_quality_scores(settings, work, splits.x_train, labels,
                                        list(range(len(labels))),
                                        [str(c) for c in range(splits.n_classes)])[2]


def compute_influence(run, splits, model, method="final", impl=DEFAULT_IMPL, hessian="reference",
                      labels=None, cfg=None, seed=0, quiet=False, dataset=None):
    """Score of every training sample by ``method`` (array over the training set, negative =
    harmful; the SGD methods give 0 to samples in no traced step). ``run`` is a trained run
    directory; ``dataset`` (its name) sets the damping of influence-functions."""
    import nnabla as nn

    if method not in METHODS or impl not in IMPLS or hessian not in HESSIANS:
        raise UserError(f"method must be one of {METHODS}, impl {IMPLS}, hessian {HESSIANS}")
    n = len(splits.y_train)
    if method == "random":
        return np.random.default_rng(seed).standard_normal(n)
    run = Path(run)
    labels = splits.y_train if labels is None else labels
    if method == "confident-learning":
        from datacleansing.confident_learning import confident_learning_scores
        return confident_learning_scores(splits.x_train, labels, splits.n_classes, seed=seed)
    if method == "cross-validated":
        return cross_validated_scores(run, splits, model, labels, seed, quiet=quiet)
    if method == "influence-functions":
        from datacleansing.influence_functions import compute_influence_functions
        return compute_influence_functions(run, splits, model, labels, cfg, dataset,
                                           quiet=quiet)
    steps = read_trace(run / "trace.npz")
    final = read_params(run / "params" / "final.h5")
    step_files = sorted((run / "params" / "steps").glob("step_*.h5"))
    if method == "hara" and len(step_files) != len(steps):
        raise UserError(f"{run}: SGD-influence needs the parameters of every traced step "
                        f"({len(steps)}), found {len(step_files)}; train with --cache all")
    nn.clear_parameters()
    build(model, nn.Variable((1,) + splits.image_shape), splits.n_classes, bn="test")
    load_snapshot(final)
    u = validation_gradient(model, splits)
    graphs = InfluenceGraphs(model, splits)
    scores = np.zeros(n)
    for step in bar(steps[::-1], quiet, desc=f"influence ({method})", unit="step"):
        # the parameters this step saw (Hara) or the final ones; also resets BN statistics
        load_snapshot(read_params(step_files[step.index]) if method == "hara" else final)
        x, y = step_batch(splits, labels, step, cfg)
        size = len(step.batch)
        scores[step.batch] += step.lr / size * step_dots(graphs, u, x, y, impl)
        hu = hessian_vector(graphs, u, x, y)
        scale = step.lr / size if hessian == "reference" else step.lr
        u = {k: u[k] - scale * hu[k] for k in u}
    return scores
