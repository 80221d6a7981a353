"""Memory planner: the bytes one training iteration needs, computed from the nnabla graph.

``plan(graph, ...)`` replays one or more training iterations of the scripts' loop ::

    solver.zero_grad(); loss.forward(clear_no_need_grad=True)
    loss.backward(clear_buffer=True); solver.weight_decay(wd); solver.update()

without computing anything: it walks the graph in nnabla's execution order and applies the
rules of nnabla's C++ graph engine (``src/nbla/computation_graph/variable.cpp``) for when an
array is created and when it is freed:

* forward visits functions depth first from the loss, inputs in order; after a function ran,
  an input's data is freed when this was its last consumer, it is not a leaf (parameter,
  input), not persistent, not in-placed, and no function's backward needs it
  (``Function.grad_depends_input_data`` / ``grad_depends_output_data``);
* backward runs the functions that need a gradient in decreasing rank (longest path from the
  leaves), ties in the order they were queued; a function's backward creates its inputs'
  gradients and afterwards frees its outputs' data and gradients (except the loss's data);
* ``zero_grad`` frees the parameter gradients (nnabla zeroes lazily), the solver creates its
  state arrays at the first update, visiting the parameters in the order of its C++ hash
  map (the number of state arrays and that order are asked from the nnabla solver itself);
* arrays are created lazily on the first write and live in nnabla's caching allocator, which
  is simulated block by block (:class:`CachingAllocatorModel`): sizes rounded up to 512 B,
  requests up to 1 MiB cut from 1 MiB chunks, larger ones rounded to 128 KiB, best fit,
  split and merge; what it obtained from the system is the predicted ``used`` that
  :mod:`ooctrain.allocator` measures. Between equally large free blocks nnabla takes the one
  whose block object has the lowest heap address, which the planner cannot know (it takes
  the oldest); now and then this costs or saves one 1 MiB chunk;
* buffers inside nnabla's CPU functions: the convolution's im2col buffer (freed after each
  forward/backward), the batch statistics of batch normalization, the log-softmax of softmax
  cross entropy, the argmax indices of max pooling and the transposed copy of a sum/mean
  over leading axes (:data:`FUNCTION_BUFFERS`). cuDNN's workspaces are not modelled.

It also computes the smallest budget out-of-core training can run with: the swap scheduler
(``nnabla.lms.SwapInOutScheduler``) must hold every array one scheduled block touches at
once: a function's forward (inputs, outputs, buffers) or backward (output gradients, input
gradients, the data the gradients depend on, buffers), or one parameter's update (data,
gradient, solver state); the largest such set is the smallest budget (logical bytes, as the
scheduler counts them).
"""
import argparse
import bisect
import importlib.util
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field

from common.errors import UserError
from common.train.out_of_core import format_size, parse_size

__all__ = ["TrainGraph", "build_training_graph", "make_solver", "solver_state_count",
           "CachingAllocatorModel", "Plan", "plan", "plan_spec", "main", "SOLVERS"]

SOLVERS = {"sgd": "Sgd", "momentum": "Momentum", "nesterov": "Nesterov", "adam": "Adam",
           "adamw": "AdamW", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
           "rmsprop_graves": "RMSpropGraves", "adamax": "Adamax", "amsgrad": "AMSGRAD",
           "adabelief": "AdaBelief", "adabound": "AdaBound", "amsbound": "AMSBound",
           "lars": "Lars", "lamb": "Lamb", "lion": "Lion", "sgdw": "SgdW"}


# ----------------------------------------------------------------------------------------
# The training graph
# ----------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------
# nnabla's CPU caching allocator
# ----------------------------------------------------------------------------------------
ROUND_SMALL = 512
ROUND_LARGE = 128 << 10
SMALL_ALLOC = 1 << 20


def round_size(nbytes):
    """nnabla's ``CachingAllocatorWithBucketsBase::round_size``."""
    nbytes = max(int(nbytes), 1)
    if nbytes < ROUND_SMALL:
        return ROUND_SMALL
    if nbytes < SMALL_ALLOC:
        return -(-nbytes // ROUND_SMALL) * ROUND_SMALL
    return -(-nbytes // ROUND_LARGE) * ROUND_LARGE


class _Block:
    __slots__ = ("size", "seq", "prev", "next", "locked")

    def __init__(self, size, seq):
        self.size, self.seq, self.prev, self.next, self.locked = size, seq, None, None, False


class CachingAllocatorModel:
    """Block-level model of ``CachingAllocatorWithBucketsBase``: ``used[pool]`` is what it
    obtained from the system. Ties between equally large free blocks are broken by creation
    order (nnabla orders them by the address of the block object)."""

    def __init__(self):
        self.free = {"small": [], "large": []}    # sorted (size, seq, block)
        self.used = {"small": 0, "large": 0}
        self._seq = 0

    def _new(self, size):
        self._seq += 1
        return _Block(size, self._seq)

    def _cache(self, pool, block):
        bisect.insort(self.free[pool], (block.size, block.seq, block))

    def _uncache(self, pool, block):
        items = self.free[pool]
        i = bisect.bisect_left(items, (block.size, block.seq))
        if i < len(items) and items[i][2] is block:
            del items[i]

    def alloc(self, nbytes):
        size = round_size(nbytes)
        small = size <= SMALL_ALLOC
        pool = "small" if small else "large"
        items = self.free[pool]
        i = bisect.bisect_left(items, (size, -1))
        if i < len(items):
            block = items.pop(i)[2]
        else:
            block = self._new(SMALL_ALLOC if small else size)
            self.used[pool] += block.size
        if block.size - size >= (ROUND_SMALL if small else SMALL_ALLOC + 1):
            rest = self._new(block.size - size)
            rest.next, rest.prev = block.next, block
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._cache(pool, rest)
        block.locked = True
        return block

    def release(self, block):
        pool = "small" if block.size <= SMALL_ALLOC else "large"
        block.locked = False
        nxt = block.next
        if nxt is not None and not nxt.locked:
            self._uncache(pool, nxt)
            block.size += nxt.size
            block.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = block
        prv = block.prev
        if prv is not None and not prv.locked:
            self._uncache(pool, prv)
            block.size += prv.size
            block.prev = prv.prev
            if prv.prev is not None:
                prv.prev.next = block
        self._cache(pool, block)

    @property
    def total_used(self):
        return self.used["small"] + self.used["large"]

    def snapshot(self):
        """Like :func:`ooctrain.allocator.pool_used`: used bytes and cached free bytes."""
        return {"used": self.total_used,
                "free_small": sum(item[0] for item in self.free["small"]),
                "free_large": sum(item[0] for item in self.free["large"])}


class _Memory:
    """Live arrays by key: logical bytes per kind, the peak, and the allocator model."""

    KINDS = ("parameters", "gradients", "solver state", "inputs", "activations",
             "activation gradients", "function buffers", "workspace")

    def __init__(self):
        self.allocator = CachingAllocatorModel()
        self.live = {}                       # key -> (bytes, kind, block)
        self.by_kind = dict.fromkeys(self.KINDS, 0)
        self.total = 0
        self.peak = 0
        self.peak_at = "start"
        self.peak_kinds = dict(self.by_kind)
        self.where = "start"
        self.trace = None                    # list of (where, allocator used, live) if set

    def alloc(self, key, nbytes, kind):
        if key in self.live:
            return
        block = self.allocator.alloc(nbytes)
        self.live[key] = (nbytes, kind, block)
        self.by_kind[kind] += nbytes
        self.total += nbytes
        if self.total > self.peak:
            self.peak, self.peak_at, self.peak_kinds = self.total, self.where, dict(self.by_kind)

    def free(self, key):
        item = self.live.pop(key, None)
        if item is None:
            return
        nbytes, kind, block = item
        self.allocator.release(block)
        self.by_kind[kind] -= nbytes
        self.total -= nbytes


# ----------------------------------------------------------------------------------------
# Graph walk
# ----------------------------------------------------------------------------------------
class _Var:
    __slots__ = ("var", "key", "shape", "nbytes", "parent", "persistent", "need_grad",
                 "rank", "refs", "data", "grad", "leaf", "name")


class _Func:
    __slots__ = ("func", "index", "type", "args", "inputs", "outputs", "need_grad", "rank",
                 "inplace", "dep_in", "dep_out", "label")


def _itemsize(dtype):
    import numpy as np
    return np.dtype(dtype).itemsize


def _forward_order(loss):
    """Functions in nnabla's forward order (depth first from the loss, inputs in order)."""
    order, closed = [], set()
    stack = [(loss.parent, iter(loss.parent.inputs))]
    closed.add(loss.parent)
    while stack:
        func, it = stack[-1]
        for v in it:
            p = v.parent
            if p is not None and p not in closed:
                closed.add(p)
                stack.append((p, iter(p.inputs)))
                break
        else:
            stack.pop()
            order.append(func)
    return order


class _Graph:
    """The graph as plain records: variables, functions, ranks, need_grad, aliases."""

    def __init__(self, graph, act_itemsize):
        self.graph = graph
        self.vars = {}
        param_names = {hash(v): k for k, v in graph.params.items()}
        input_dtypes = {hash(v): dt for v, dt, _ in graph.inputs}
        self.funcs = []
        for index, f in enumerate(_forward_order(graph.loss)):
            rec = _Func()
            rec.func, rec.index = f, index
            rec.type = f.info.type_name
            rec.args = dict(f.info.args)
            ins, outs = list(f.inputs), list(f.outputs)
            rec.inputs = [self._var(v, act_itemsize, param_names, input_dtypes) for v in ins]
            rec.outputs = [self._var(v, act_itemsize, param_names, input_dtypes) for v in outs]
            n = len(ins)
            rec.inplace = [(f.inplace_data(i), f.inplace_data_with(i) if f.inplace_data(i)
                            else None) for i in range(n)]
            rec.dep_in = [[bool(f.grad_depends_input_data(i, j)) for j in range(n)]
                          for i in range(n)]
            rec.dep_out = [[bool(f.grad_depends_output_data(i, o)) for o in range(len(outs))]
                           for i in range(n)]
            self.funcs.append(rec)
            # rank and need_grad as visit_function_recursive sets them
            rank, need_grad = 0, False
            for v in rec.inputs:
                if v.parent is None:
                    v.rank, v.need_grad = 0, v.var.need_grad
                else:
                    v.rank, v.need_grad = v.parent.rank, v.parent.need_grad
                rank = max(rank, v.rank)
                need_grad |= v.need_grad
            rec.rank, rec.need_grad = rank + 1, need_grad
            for o, v in enumerate(rec.outputs):
                v.parent, v.leaf = rec, False
            for i, (mode, with_) in enumerate(rec.inplace):
                if mode:
                    rec.outputs[with_].data = rec.inputs[i].data
            rec.label = self._label(rec)
        self.loss = self.vars[hash(graph.loss)]

    def _var(self, v, act_itemsize, param_names, input_dtypes):
        key = hash(v)
        rec = self.vars.get(key)
        if rec is not None:
            return rec
        rec = _Var()
        rec.var, rec.key, rec.shape = v, key, tuple(v.shape)
        rec.parent, rec.leaf = None, True
        rec.persistent = bool(v.persistent)
        rec.name = param_names.get(key)
        if rec.name is not None or key in input_dtypes:
            itemsize = 4 if rec.name is not None else _itemsize(input_dtypes[key])
        else:
            itemsize = act_itemsize
        rec.nbytes = int(v.size) * itemsize
        rec.rank, rec.need_grad = 0, bool(v.need_grad)
        # function_reference_count: references by every function, repeats counted
        refs = 0
        for f in v.function_references:
            refs += sum(1 for u in f.inputs if u == v)
        rec.refs = refs
        rec.data, rec.grad = f"d{key}", f"g{key}"
        self.vars[key] = rec
        return rec

    @staticmethod
    def _label(rec):
        for v in rec.inputs:
            if v.name is not None:
                return f"{rec.type} {v.name.rsplit('/', 1)[0]}"
        shape = "x".join(map(str, rec.outputs[0].shape)) if rec.outputs else ""
        return f"{rec.type} #{rec.index} -> {shape}"


def _kind_of(v):
    if v.name is not None:
        return "parameters"
    return "activations" if not v.leaf else "inputs"


def _bytes(shape, itemsize):
    return int(math.prod(shape)) * itemsize


def _conv_col(f, itemsize):
    """The CPU convolution's im2col buffer: one sample's patches, C_in * prod(kernel) rows
    by prod(output spatial) columns (NCHW; the CPU kernel has no channel-last path)."""
    base = int(f.args.get("base_axis", 1))
    channels = f.inputs[0].shape[base]
    kernel = f.inputs[1].shape[2:]
    out = f.outputs[0].shape[base + 1:]
    return int(channels * math.prod(kernel) * math.prod(out)) * itemsize


def _sum_transposed(f, itemsize):
    ndim = len(f.inputs[0].shape)
    axes = sorted(a % ndim for a in f.args.get("axes", range(ndim)))
    if axes == list(range(ndim - len(axes), ndim)):
        return 0
    return f.inputs[0].nbytes


# Buffers nnabla's CPU functions take from the same allocator, read off their sources:
# type -> {moment: [(name, life, bytes(function record, itemsize))]}. Moments:
# forward_before/forward_after (created before/after the outputs), backward_before/
# backward_after (before/after the input gradients). Life "persistent": a member of the
# function object, created by the first forward and kept; "transient": freed before the
# function returns.
FUNCTION_BUFFERS = {
    "Convolution": {"forward_before": [("col", "transient", _conv_col)],
                    "backward_before": [("col", "transient", _conv_col)]},
    "BatchNormalization": {
        "forward_after": [("mean", "persistent",
                           lambda f, s: _bytes(f.inputs[3].shape, s) if f.args.get(
                               "batch_stat", True) and len(f.outputs) == 1 else 0),
                          ("var", "persistent",
                           lambda f, s: _bytes(f.inputs[4].shape, s) if f.args.get(
                               "batch_stat", True) and len(f.outputs) == 1 else 0)]},
    "SoftmaxCrossEntropy": {"forward_before": [("log_softmax", "persistent",
                                                lambda f, s: f.inputs[0].nbytes)]},
    "MaxPooling": {"forward_after": [("max_idx", "persistent",
                                      lambda f, s: _bytes(f.outputs[0].shape, 4))]},
    "Sum": {"forward_after": [("transpose", "transient", _sum_transposed)],
            "backward_after": [("transpose", "transient", _sum_transposed)]},
    "Mean": {"forward_after": [("transpose", "transient", _sum_transposed)],
             "backward_after": [("transpose", "transient", _sum_transposed)]},
}


# ----------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------
@dataclass
class Plan:
    parameters: int
    gradients: int
    solver_state: int
    inputs: int
    activations: int            # kept for backward at the end of forward (incl. buffers)
    peak: int                   # logical peak working set (sum of live array bytes)
    peak_at: str
    peak_breakdown: dict
    allocator_used: int         # simulated allocator high-water mark (rounding, chunks)
    allocator_used_history: list   # ooctrain.allocator.pool_used-like dict per iteration
    min_budget: int             # smallest --ooc-budget: largest single-function need
    min_budget_at: str
    functions: int
    state_arrays: int
    itemsize: int
    unmodelled: list = field(default_factory=list)

    def rows(self):
        return [("parameters", self.parameters), ("gradients", self.gradients),
                ("solver state", self.solver_state), ("input batch", self.inputs),
                ("activations kept for backward", self.activations),
                ("peak working set", self.peak),
                ("allocator used (simulated)", self.allocator_used),
                ("smallest out-of-core budget", self.min_budget)]


def _itemsize_for(type_config):
    if type_config not in ("float", "half"):
        raise UserError(f"unknown type config {type_config!r}; use float or half")
    return 4 if type_config == "float" else 2


def plan(graph, solver="momentum", iterations=3, type_config="float", trace=None):
    """Simulate ``iterations`` training iterations of ``graph`` (:class:`TrainGraph`) and
    return a :class:`Plan`. Weight decay needs no model: it creates no array (nnabla adds it
    to the gradients in place). ``type_config="half"``
    stores activations and their gradients in 2 bytes and keeps a half copy of every
    parameter and gradient next to the float ones the solver works on (an estimate: the CPU
    measurement is float only). ``trace``: a list that receives ``(where, allocator used,
    live bytes)`` after every function (for debugging against nnabla's function hooks)."""
    itemsize = _itemsize_for(type_config)
    half = type_config == "half"
    n_states = solver_state_count(solver)
    g = _Graph(graph, itemsize)
    mem = _Memory()
    mem.trace = trace
    params = [g.vars.get(hash(v)) or _detached(v, name) for name, v in graph.params.items()]
    by_name = {p.name: p for p in params}
    # the solver updates in the order of its hash map; ask nnabla for it
    solver_vars = [by_name[name] for name in solver_update_order(solver, graph)]
    unmodelled = sorted({f.type for f in g.funcs} - set(FUNCTION_BUFFERS) - _PLAIN)

    # parameters are created with the graph; half keeps a half copy used by the functions
    for p in params:
        mem.alloc(p.data, p.nbytes, "parameters")
        if half:
            mem.alloc(p.data + "h", p.nbytes // 2, "parameters")
    kept = 0
    history = []
    for it in range(iterations):
        mem.where = f"iteration {it + 1}: inputs"
        for v, dtype, _ in graph.inputs:
            rec = g.vars.get(hash(v))
            if rec is not None:
                mem.alloc(rec.data, rec.nbytes, "inputs")
        for p in solver_vars:                                   # zero_grad
            mem.free(p.grad)
            mem.free(p.grad + "f")
        _forward(g, mem, itemsize)
        if it == 0:
            kept = sum(n for n, kind, _ in mem.live.values()
                       if kind in ("activations", "function buffers"))
        _backward(g, mem, itemsize, half)
        mem.where = f"iteration {it + 1}: update"
        for p in solver_vars:
            if p.grad in mem.live:
                for s in range(n_states):
                    mem.alloc(f"{p.data}s{s}", p.nbytes, "solver state")
                if half:
                    mem.alloc(p.grad + "f", p.nbytes, "gradients")
        history.append(mem.allocator.snapshot())
    budget, budget_at = _min_budget(g, itemsize, n_states, solver_vars, graph)
    grads = sum(p.nbytes for p in solver_vars) * (1.5 if half else 1)
    return Plan(parameters=sum(p.nbytes for p in params) * (3 if half else 2) // 2,
                gradients=int(grads), solver_state=sum(p.nbytes for p in solver_vars) * n_states,
                inputs=sum(g.vars[hash(v)].nbytes for v, _, _ in graph.inputs
                           if hash(v) in g.vars),
                activations=kept, peak=mem.peak, peak_at=mem.peak_at,
                peak_breakdown=mem.peak_kinds,
                allocator_used=mem.allocator.total_used, allocator_used_history=history,
                min_budget=budget, min_budget_at=budget_at, functions=len(g.funcs),
                state_arrays=n_states, itemsize=itemsize, unmodelled=unmodelled)


# Functions whose CPU implementation allocates nothing besides its outputs and gradients.
_PLAIN = {"ReLU", "Add2", "Sub2", "Mul2", "Div2", "Affine", "GlobalAveragePooling",
          "AveragePooling", "Concatenate", "Reshape", "Identity", "Sigmoid", "Tanh",
          "LeakyReLU", "ELU", "Swish", "MulScalar", "AddScalar", "PowScalar", "Dropout",
          "LogSoftmax", "Softmax", "Abs", "SquaredError", "Transpose", "Slice", "Split",
          "Stack", "BcAdd2"}


def _detached(v, name):
    """A parameter the loss does not use: only its data lives."""
    rec = _Var()
    rec.var, rec.key, rec.shape, rec.name = v, hash(v), tuple(v.shape), name
    rec.nbytes = int(v.size) * 4
    rec.data, rec.grad = f"d{rec.key}", f"g{rec.key}"
    rec.parent, rec.leaf, rec.persistent, rec.need_grad = None, True, True, v.need_grad
    rec.rank, rec.refs = 0, 0
    return rec


def _buffers(f, phase, itemsize):
    out = []
    for name, life, size in FUNCTION_BUFFERS.get(f.type, {}).get(phase, []):
        nbytes = size(f, itemsize)
        if nbytes:
            out.append((f"f{f.index}:{name}", nbytes, life))
    return out


def _forward(g, mem, itemsize):
    need_grad_set, inplace_set, seen = set(), set(), {}
    for f in g.funcs:
        mem.where = f"forward {f.label}"
        for v in f.inputs:                       # reading a never-written array creates it
            if v.data not in mem.live and not v.leaf:
                mem.alloc(v.data, v.nbytes, "activations")
            elif v.data not in mem.live:
                mem.alloc(v.data, v.nbytes, _kind_of(v))
        transient = []
        for key, nbytes, life in _buffers(f, "forward_before", itemsize):
            mem.alloc(key, nbytes, "function buffers" if life == "persistent" else "workspace")
            if life == "transient":
                transient.append(key)
        for v in f.outputs:
            mem.alloc(v.data, v.nbytes, "activations")
        for key, nbytes, life in _buffers(f, "forward_after", itemsize):
            mem.alloc(key, nbytes, "function buffers" if life == "persistent" else "workspace")
            if life == "transient":
                transient.append(key)
        for key in transient:
            mem.free(key)
        if mem.trace is not None:
            mem.trace.append((mem.where, mem.allocator.total_used, mem.total))
        # ForwardCallback::get_clear_flags with clear_no_need_grad=True
        n = len(f.inputs)
        for o, v in enumerate(f.outputs):
            if f.need_grad and any(f.dep_out[i][o] for i in range(n)):
                need_grad_set.add(v.key)
        for i, v in enumerate(f.inputs):
            if f.need_grad and any(f.dep_in[j][i] for j in range(n)):
                need_grad_set.add(v.key)
            mode, with_ = f.inplace[i]
            if mode:
                inplace_set.add(v.key)
                inplace_set.add(f.outputs[with_].key)
            if v.refs >= 2:
                seen[v.key] = seen.get(v.key, 0) + 1
                if seen[v.key] != v.refs:
                    continue
            if v.leaf or v.rank == 0 or v.persistent or mode or v.key in inplace_set:
                continue
            if v.key in need_grad_set:
                continue
            mem.free(v.data)


def _backward(g, mem, itemsize, half):
    import heapq

    ids = {}
    heap = []

    def push(f):
        if f.index not in ids:
            ids[f.index] = len(ids)
        item = (-f.rank, ids[f.index], f.index)
        if item not in queued:
            queued.add(item)
            heapq.heappush(heap, item)

    queued = set()
    initial = {v.key for v in g.loss.parent.outputs}
    vseen = {}
    push(g.loss.parent)
    while heap:
        _, _, index = heapq.heappop(heap)
        f = g.funcs[index]
        if not f.need_grad:
            continue
        mem.where = f"backward {f.label}"
        # query_input_flags
        for i, v in enumerate(f.inputs):
            if v.key not in vseen:
                vseen[v.key] = [True, True]
            mode, with_ = f.inplace[i]
            if mode:
                o = f.outputs[with_]
                if o.key not in vseen or not vseen[o.key][0] or o.persistent:
                    vseen[v.key][0] = False
        # query_outputs_flags (clear_buffer=True, a scalar initial gradient)
        flags, first = [], []
        for v in f.outputs:
            is_first = v.key not in vseen
            if is_first:
                vseen[v.key] = [False, True]
            flag = list(vseen[v.key])
            if v.persistent:
                flag = [False, False]
            flags.append(flag)
            first.append(is_first)
        for i, (mode, with_) in enumerate(f.inplace):
            if mode:
                flags[with_][0] = False
        for v, is_first in zip(f.outputs, first):   # force_zero_grad_if_unseen
            if is_first and v.key not in initial:
                mem.free(v.grad)
        transient = []
        for key, nbytes, life in _buffers(f, "backward_before", itemsize):
            mem.alloc(key, nbytes, "workspace")
            transient.append(key)
        for v in f.outputs:                          # reading dy creates a lazy gradient
            mem.alloc(v.grad, v.nbytes, "activation gradients")
        for v in f.inputs:
            if v.need_grad:
                if v.name is None:
                    mem.alloc(v.grad, v.nbytes, "activation gradients")
                else:      # half: the functions write a half gradient, the solver reads float
                    mem.alloc(v.grad, v.nbytes // 2 if half else v.nbytes, "gradients")
        for key, nbytes, life in _buffers(f, "backward_after", itemsize):
            mem.alloc(key, nbytes, "workspace")
            transient.append(key)
        for key in transient:
            mem.free(key)
        if mem.trace is not None:
            mem.trace.append((mem.where, mem.allocator.total_used, mem.total))
        for v, (clear_data, clear_grad) in zip(f.outputs, flags):
            if clear_data:
                mem.free(v.data)
            if clear_grad:
                mem.free(v.grad)
        for v in f.inputs:
            if v.need_grad and v.parent is not None:
                push(v.parent)


def _min_budget(g, itemsize, n_states, solver_vars, graph):
    """The largest set of arrays one scheduled block touches (the swap scheduler's unit)."""
    best, best_at = 0, "nothing"

    def consider(nbytes, where):
        nonlocal best, best_at
        if nbytes > best:
            best, best_at = nbytes, where

    for f in g.funcs:
        arrays = {}
        for v in f.inputs + f.outputs:
            arrays[v.data] = v.nbytes
        for phase in ("forward_before", "forward_after"):
            for key, nbytes, _ in _buffers(f, phase, itemsize):
                arrays[key] = nbytes
        consider(sum(arrays.values()), f"forward {f.label}")
        if not f.need_grad:
            continue
        n = len(f.inputs)
        prop = [v.need_grad for v in f.inputs]
        arrays = {}
        for v in f.outputs:
            arrays[v.grad] = v.nbytes
        for j, v in enumerate(f.inputs):
            if prop[j]:
                arrays[v.grad] = v.nbytes
            if any(prop[i] and f.dep_in[i][j] for i in range(n)):
                arrays[v.data] = v.nbytes
        for o, v in enumerate(f.outputs):
            if any(prop[i] and f.dep_out[i][o] for i in range(n)):
                arrays[v.data] = v.nbytes
        for phase in ("forward_before", "forward_after", "backward_before", "backward_after"):
            for key, nbytes, life in _buffers(f, phase, itemsize):
                if life == "persistent" or phase.startswith("backward"):
                    arrays[key] = nbytes
        consider(sum(arrays.values()), f"backward {f.label}")
    for p in solver_vars:
        consider(p.nbytes * (2 + n_states), f"update {p.name}")
    consider(sum(g.vars[hash(v)].nbytes for v, _, _ in graph.inputs if hash(v) in g.vars),
             "input set-up")
    return best, best_at


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------
def plan_spec(spec, solver="momentum", iterations=3, type_config="float"):
    """:func:`plan` for a graph described by a spec dict (:func:`build_training_graph`)."""
    graph = build_training_graph(spec)
    return plan(graph, solver, iterations, type_config)


def _device_memory():
    """Total memory of the current CUDA device, or None without the CUDA extension
    (``nnabla_ext.cuda.init.get_device_memory_size()`` returns ``[free, total]``)."""
    try:
        import nnabla_ext.cuda.init as cuda_init
        info = cuda_init.get_device_memory_size()
        return int(info[1] if isinstance(info, (list, tuple)) else info)
    except Exception:   # no extension, no driver, no such function
        return None


def _parser():
    from common.cli import Parser
    from ooctrain.models import ARCHITECTURES

    p = Parser(prog="plan.py", description=(
        "Bytes one training iteration of a network needs (parameters, gradients, solver "
        "state, activations kept for backward, peak working set), whether that fits the GPU "
        "and the --ooc-budget out-of-core training needs."))
    p.add_argument("--arch", default="resnet50", choices=sorted(ARCHITECTURES))
    p.add_argument("--blocks", type=int, nargs="+", default=None,
                   help="blocks per stage (ResNet) or layers per dense block (DenseNet)")
    p.add_argument("--width", type=int, default=None,
                   help="base width as in train.py: ResNet first-stage channels, DenseNet stem")
    p.add_argument("--growth", type=int, default=None, help="DenseNet growth rate")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--image-size", type=int, default=224, help="(default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=1000, help="(default: %(default)s)")
    p.add_argument("--small-input", action=argparse.BooleanOptionalAction, default=False,
                   help="3x3 stride-1 stem without max pooling, for CIFAR-sized images, as "
                        "train.py --small-input (default: %(default)s)")
    p.add_argument("--solver", default="momentum", choices=sorted(SOLVERS))
    p.add_argument("--type-config", default="float", choices=("float", "half"),
                   help="half: 2-byte activations (estimate; --measure is float only)")
    p.add_argument("--gpu-memory", default=None, metavar="SIZE",
                   help="GPU memory to plan for, e.g. 16GiB (default: the current CUDA "
                        "device's when the nnabla CUDA extension is installed)")
    p.add_argument("--margin", type=float, default=0.1,
                   help="fraction of the GPU memory the suggested --ooc-budget leaves free "
                        "for what the scheduler does not manage (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=3,
                   help="training iterations to simulate / measure (default: %(default)s)")
    p.add_argument("--measure", action="store_true",
                   help="also run the iterations on the CPU in a fresh process and compare "
                        "the prediction with nnabla's allocator")
    return p


def spec_from_args(args):
    """The :func:`build_training_graph` spec of the command line (sizes as train.py)."""
    from ooctrain.models import ModelSpec

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.iterations < 1:
        raise UserError(f"--iterations must be >= 1, got {args.iterations}")
    if not 0 <= args.margin < 1:
        raise UserError(f"--margin must be in [0, 1), got {args.margin}")
    if any(b < 1 for b in (args.blocks or [])):
        raise UserError(f"--blocks must be positive, got {args.blocks}")
    for key in ("width", "growth"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise UserError(f"--{key} must be >= 1, got {getattr(args, key)}")
    model = ModelSpec.from_sizes(args.arch, args.blocks, args.width, args.growth)
    model.config()                                  # one-line error for a size it lacks
    overrides = {k: list(v) if isinstance(v, (list, tuple)) else v
                 for k, v in model.overrides.items()}
    return {"arch": args.arch, "overrides": overrides, "batch_size": args.batch_size,
            "image_size": args.image_size, "num_classes": args.num_classes,
            "small_input": args.small_input, "solver": args.solver,
            "iterations": args.iterations}


def relative_error(predicted, measured):
    return (predicted - measured) / measured if measured else float("inf")


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def main(argv=None):
    from common.report import markdown_table

    args = _parser().parse_args(argv)
    spec = spec_from_args(args)
    if args.measure and args.type_config != "float":
        raise UserError("--measure runs on the CPU in float; drop --type-config half")
    gpu = parse_size(args.gpu_memory) if args.gpu_memory is not None else _device_memory()
    result = plan_spec(spec, args.solver, args.iterations, args.type_config)

    sizes = ", ".join(f"{k}={v}" for k, v in spec["overrides"].items())
    print(f"{args.arch}{' (' + sizes + ')' if sizes else ''}, batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {args.num_classes} classes, {args.solver} "
          f"({result.state_arrays} state array(s) per parameter), {args.type_config}; "
          f"{result.functions} functions")
    rows = [(name, format_size(n), f"{int(n):,}") for name, n in result.rows()]
    print(markdown_table(["", "size", "bytes"], rows))
    at_peak = ", ".join(f"{k} {format_size(v)}" for k, v in result.peak_breakdown.items() if v)
    print(f"peak working set during {result.peak_at}: {at_peak}")
    print(f"smallest out-of-core budget: what {result.min_budget_at} touches at once")
    if args.type_config == "half":
        print("half: an estimate (2-byte activations, half copies of parameters and "
              "gradients next to the float ones); not measurable on the CPU")
    if result.unmodelled:
        print(f"note: internal buffers of {', '.join(result.unmodelled)} are not modelled")
    print(_verdict(result, gpu, args.margin))
    if args.measure:
        _measure_and_compare(spec, result, markdown_table)
    return 0


def _verdict(result, gpu, margin):
    """Whether the run fits ``gpu`` bytes and, if not, the --ooc-budget to use."""
    need = result.allocator_used
    if gpu is None:
        return ("GPU memory unknown (no nnabla CUDA extension): pass --gpu-memory SIZE to "
                "check whether it fits")
    usable = gpu * (1 - margin)
    if need <= usable:
        return (f"fits in {format_size(gpu)} of GPU memory with {margin:.0%} to spare: "
                f"train in core, no --ooc-budget needed")
    if result.min_budget > usable:
        return (f"does not fit in {format_size(gpu)}, and even out of core the smallest "
                f"budget {format_size(result.min_budget)} ({result.min_budget_at}) leaves "
                f"less than {margin:.0%} of the GPU free: lower the batch size")
    return (f"does not fit in {format_size(gpu)} of GPU memory ({format_size(need)} needed): "
            f"train out of core with --ooc-budget {_budget_text(usable, result.min_budget)} "
            f"(at least {format_size(result.min_budget)}); the host must hold about "
            f"{format_size(need)}")


def _measure_and_compare(spec, result, markdown_table):
    from ooctrain.allocator import measure

    physical = _physical_memory()
    if physical and result.allocator_used > 0.7 * physical:
        raise UserError(f"--measure would need about {format_size(result.allocator_used)} of "
                        f"the {format_size(physical)} RAM; use a smaller batch or network")
    measured = measure(spec)
    rows = []
    for i, (pred, meas) in enumerate(zip(result.allocator_used_history, measured["history"])):
        p, m = pred["used"], meas["used"]
        rows.append((i + 1, f"{p:,}", f"{m:,}", f"{relative_error(p, m):+.1%}"))
    print("allocator used after each iteration (CPU, fresh process):")
    print(markdown_table(["iteration", "predicted bytes", "measured bytes", "error"], rows))
    print(f"predicted {format_size(result.allocator_used)}, measured "
          f"{format_size(measured['used'])}: error "
          f"{relative_error(result.allocator_used, measured['used']):+.1%} (the logical "
          f"peak working set alone: {relative_error(result.peak, measured['used']):+.1%}; "
          f"the rest is rounding, 1 MiB chunks and fragmentation)")


def _budget_text(nbytes, minimum):
    """``nbytes`` as an --ooc-budget value rounded down to 0.01 GiB (or 1 MiB), never below
    ``minimum``."""
    unit, name = (2 ** 30, "GiB") if nbytes >= 2 ** 30 else (2 ** 20, "MiB")
    value = math.floor(round(nbytes / unit * 100, 3)) / 100
    if value * unit < minimum:
        value = math.ceil(minimum / unit * 100) / 100
    return f"{value:g}{name}"
