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
  is simulated block by block (:mod:`ooctrain.allocator_model`): sizes rounded up to 512 B,
  requests up to 1 MiB cut from 1 MiB chunks, larger ones rounded to 128 KiB, best fit,
  split and merge; what it obtained from the system is the predicted ``used`` that
  :mod:`ooctrain.measure` measures. Between equally large free blocks nnabla takes the one
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
import math
from dataclasses import dataclass, field

from common.errors import UserError
from ooctrain.allocator_model import CachingAllocatorModel
from ooctrain.graph import build_training_graph, solver_state_count, solver_update_order

__all__ = ["Plan", "plan", "plan_spec", "FUNCTION_BUFFERS"]


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
            for v in rec.outputs:
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
    allocator_used_history: list   # ooctrain.measure.pool_used-like dict per iteration
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
        for v, _, _ in graph.inputs:
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
        for mode, with_ in f.inplace:
            if mode:
                flags[with_][0] = False
        for v, is_first in zip(f.outputs, first):   # force_zero_grad_if_unseen
            if is_first and v.key not in initial:
                mem.free(v.grad)
        transient = []
        for key, nbytes, _ in _buffers(f, "backward_before", itemsize):
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
        for key, nbytes, _ in _buffers(f, "backward_after", itemsize):
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


def plan_spec(spec, solver="momentum", iterations=3, type_config="float"):
    """:func:`plan` for a graph described by a spec dict (:func:`build_training_graph`)."""
    graph = build_training_graph(spec)
    return plan(graph, solver, iterations, type_config)
