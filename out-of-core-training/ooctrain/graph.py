"""The training graph that the memory planner, the allocator measurement and the benchmark
share: a network's scalar loss, its data inputs and parameters (:func:`build_training_graph`,
from an :mod:`ooctrain.models` architecture or any builder function), the nnabla solver that
updates it, and :func:`run_iterations`, which trains it exactly like the training scripts.
"""
import contextlib
import importlib.util
import os
from collections import OrderedDict
from dataclasses import dataclass

from common.errors import UserError

__all__ = ["SOLVERS", "TrainGraph", "build_training_graph", "make_solver",
           "solver_update_order", "solver_state_count", "run_iterations"]

SOLVERS = {"sgd": "Sgd", "momentum": "Momentum", "nesterov": "Nesterov", "adam": "Adam",
           "adamw": "AdamW", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
           "rmsprop_graves": "RMSpropGraves", "adamax": "Adamax", "amsgrad": "AMSGRAD",
           "adabelief": "AdaBelief", "adabound": "AdaBound", "amsbound": "AMSBound",
           "lars": "Lars", "lamb": "Lamb", "lion": "Lion", "sgdw": "SgdW"}


@dataclass
class TrainGraph:
    """A training graph: the scalar ``loss`` (built with ``test=False``), its data inputs as
    ``(variable, numpy dtype, label range or None)`` and every parameter (``grad_only=False``,
    creation order)."""
    loss: object
    inputs: list
    params: OrderedDict

    def solver_params(self):
        return OrderedDict((k, v) for k, v in self.params.items() if v.need_grad)


def _load_builder(ref):
    path, _, name = str(ref).rpartition(":")
    if not path or not name:
        raise UserError(f"builder {ref!r} must be FILE.py:FUNCTION")
    if not os.path.isfile(path):
        raise UserError(f"builder file {path} does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"_planner_builder_{abs(hash(path))}",
                                                      path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise UserError(f"{path} has no function {name!r}")
    return getattr(module, name)


def build_training_graph(spec):
    """A :class:`TrainGraph` from a plain dict, its parameters created in a fresh private
    parameter scope (nnabla's global one is left alone):

    * ``{"arch": "resnet50", "overrides": {...}, "batch_size": N, "image_size": S,
      "num_classes": C, "small_input": bool}``: an :mod:`ooctrain.models` network with
      ``loss = mean(softmax_cross_entropy(logits, labels))``, images float32 (N, 3, S, S),
      labels int32 (N, 1);
    * ``{"builder": "FILE.py:FUNCTION", "kwargs": {...}, "batch_size": N}``: any network;
      ``FUNCTION(batch_size, **kwargs)`` builds it with parametric functions and returns
      ``(loss, inputs)`` with inputs ``[(variable, dtype[, label range])]``.
    """
    import nnabla as nn

    batch = spec.get("batch_size", 0)
    if not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch size must be a positive integer, got {batch!r}")
    with nn.parameter_scope("", OrderedDict()):
        if spec.get("builder"):
            loss, inputs = _load_builder(spec["builder"])(batch, **spec.get("kwargs", {}))
            inputs = [tuple(i) + (None,) * (3 - len(i)) for i in inputs]
        else:
            loss, inputs = _model_graph(spec, batch)
        params = nn.get_parameters(grad_only=False)
    if loss.size != 1 or loss.parent is None:
        raise UserError("the loss must be a scalar computed by the graph")
    return TrainGraph(loss, inputs, params)


def _model_graph(spec, batch):
    import nnabla as nn
    import nnabla.functions as F

    from ooctrain.models import ModelSpec, build

    size, classes = int(spec.get("image_size", 224)), int(spec.get("num_classes", 1000))
    if size < 8:
        raise UserError(f"image size must be >= 8, got {size}")
    if classes < 2:
        raise UserError(f"number of classes must be >= 2, got {classes}")
    small = bool(spec.get("small_input", False))
    model = ModelSpec(spec.get("arch", "resnet50"), dict(spec.get("overrides") or {}))
    x = nn.Variable((batch, 3, size, size))
    t = nn.Variable((batch, 1))
    try:
        logits = build(model, x, classes, test=False, small_input=small)
    except (RuntimeError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        raise UserError(f"cannot build {model.arch} for {size}x{size} images: "
                        f"{lines[-1] if lines else type(exc).__name__}") from None
    loss = F.mean(F.softmax_cross_entropy(logits, t))
    return loss, [(x, "float32", None), (t, "int32", classes)]


def make_solver(name, lr=1e-3):
    import nnabla.solvers as S

    if name not in SOLVERS:
        raise UserError(f"unknown solver {name!r}; use one of {', '.join(SOLVERS)}")
    cls = getattr(S, SOLVERS[name])
    return cls(lr) if name not in ("adadelta",) else cls()


def solver_update_order(name, graph):
    """Parameter names in the order ``solver.update()`` visits them (a C++ hash map)."""
    solver = make_solver(name)
    solver.set_parameters(graph.solver_params())
    return list(solver.get_parameters().keys())


def solver_state_count(name):
    """State arrays per parameter, asked from the nnabla solver itself."""
    import nnabla as nn

    solver = make_solver(name)
    solver.set_parameters({"p": nn.Variable((1,), need_grad=True)})
    return len(solver.get_states()["p"].pstate)


def run_iterations(graph, solver_name="momentum", weight_decay=1e-4, iterations=3,
                   after_iteration=None, ooc=None, lr=1e-3):
    """Train ``graph`` (:class:`TrainGraph`) like the training scripts:
    ``zero_grad; forward(clear_no_need_grad); backward(clear_buffer); weight_decay;
    update``, with random float32 inputs and int32 labels. ``after_iteration(i)`` is
    called after each iteration; ``ooc`` is an optional :class:`common.train.out_of_core.OutOfCore`
    whose ``step()`` wraps every iteration."""
    import numpy as np

    solver = make_solver(solver_name, lr)
    solver.set_parameters(graph.solver_params())
    rng = np.random.RandomState(0)
    for i in range(iterations):
        with (ooc.step() if ooc is not None else contextlib.nullcontext({})) as hooks:
            for var, dtype, high in graph.inputs:
                if np.dtype(dtype).kind in "iu":
                    var.d = rng.randint(0, high or 2, size=var.shape).astype(dtype)
                else:
                    var.d = rng.randn(*var.shape).astype(dtype)
            solver.zero_grad()
            graph.loss.forward(clear_no_need_grad=True, **hooks)
            graph.loss.backward(clear_buffer=True, **hooks)
            if weight_decay:
                solver.weight_decay(weight_decay)
            solver.update()
        if after_iteration is not None:
            after_iteration(i)
    return float(graph.loss.d)
