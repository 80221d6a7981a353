"""Models that keep their nnabla parameters in their own dictionary.

Each paper's model (X-UMX, D3Net-MSS, D3Net segmentation, ...) holds its parameters in
``self.params``, an ordered dict used as the root of nnabla's parameter scope, so several models
(e.g. four per-source networks) coexist without name clashes; a trainer passes nnabla's global
scope instead so that ``nn.get_parameters()`` and checkpoints see them. Official weight files
are checked name by name and shape by shape before anything is loaded.
"""
import contextlib
from collections import OrderedDict

import numpy as np

from common.errors import UserError

#: batch-norm running statistics: stored, not trained (``need_grad=False`` in official files)
BN_STATISTICS = ("/bn/mean", "/bn/var")


def parameter_differences(params, expected):
    """``(missing, unexpected, mismatched)`` between ``params`` (name -> array) and
    ``expected`` (name -> shape); ``mismatched`` holds ``(name, got, want)`` tuples."""
    missing = [k for k in expected if k not in params]
    unexpected = [k for k in params if k not in expected]
    mismatched = [(k, tuple(np.shape(params[k])), tuple(expected[k])) for k in expected
                  if k in params and tuple(np.shape(params[k])) != tuple(expected[k])]
    return missing, unexpected, mismatched


def _listing(items, limit=5):
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def check_parameter_shapes(params, expected, what="model", source=None):
    """Raise a one-line :class:`UserError` unless ``params`` has exactly the names and shapes
    of ``expected``; the message counts and lists what is missing, unexpected or of the wrong
    shape, and names ``source`` (e.g. the file) when given."""
    missing, unexpected, mismatched = parameter_differences(params, expected)
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} with wrong shape: " + _listing(
            f"{k} {got} (expected {want})" for k, got, want in mismatched))
    src = f"{source} " if source else "the parameters "
    raise UserError(f"{src}do not fit the {what} ({len(expected)} parameters): "
                    + "; ".join(parts))


class OwnParameters:
    """Mixin for a model whose parameters live in ``self.params``.

    Subclasses set ``self.params`` (``OrderedDict()`` or a caller's scope) and implement
    :meth:`parameter_shapes`; ``model_description`` names the model in error messages.
    """

    model_description = "model"

    @contextlib.contextmanager
    def parameter_scope(self):
        """Context in which this model's parameter dict is nnabla's current scope."""
        import nnabla as nn

        with nn.parameter_scope("", self.params) as scope:
            yield scope

    def get_parameters(self, grad_only=False):
        """``OrderedDict[name -> nn.Variable]`` with the official names."""
        import nnabla as nn

        with self.parameter_scope():
            return nn.get_parameters(grad_only=grad_only)

    def parameter_shapes(self):
        """``OrderedDict[name -> shape]`` of every parameter, in official creation order."""
        raise NotImplementedError

    def load_parameters(self, params, need_grad=None):
        """Set the parameters from ``params`` (name -> array, e.g. from
        :func:`common.runtime.params_io.read_param_file`). Names and shapes must equal
        :meth:`parameter_shapes` exactly (otherwise a :class:`UserError` lists the
        differences)."""
        check_parameter_shapes(params, self.parameter_shapes(), what=self.model_description)
        self.assign_parameters(params, need_grad)

    def assign_parameters(self, params, need_grad=None):
        """Write ``params`` into this model without checking completeness: existing variables
        are updated in place (graphs already built see the new values), others are created.
        ``need_grad`` defaults to the official flags (False for batch-norm statistics)."""
        from .params_io import set_nnabla_parameters

        if need_grad is None:
            need_grad = {k: not k.endswith(BN_STATISTICS) for k in params}
        existing = self.get_parameters()
        fresh = OrderedDict()
        for name, value in params.items():
            value = np.asarray(value, dtype=np.float32)
            var = existing.get(name)
            if var is None:
                fresh[name] = value
                continue
            if tuple(var.shape) != value.shape:
                raise UserError(f"parameter {name}: shape {value.shape} differs from the "
                                f"existing {tuple(var.shape)}")
            var.d = value
            var.need_grad = bool(need_grad[name])
        if fresh:
            with self.parameter_scope():
                set_nnabla_parameters(fresh, need_grad={k: need_grad[k] for k in fresh})

    def parameters_numpy(self):
        """``OrderedDict[name -> float32 ndarray]`` copy of the parameters."""
        return OrderedDict((k, v.d.copy()) for k, v in self.get_parameters().items())

    def save_parameters(self, path, prefix=""):
        """Write the parameters as an nnabla ``.h5`` file with the official names, each
        preceded by ``prefix`` (e.g. ``"vocals/"`` as in the official D3Net files)."""
        from .params_io import write_param_file

        params = self.get_parameters()
        write_param_file(path, OrderedDict((prefix + k, v.d) for k, v in params.items()),
                         OrderedDict((prefix + k, v.need_grad) for k, v in params.items()))
