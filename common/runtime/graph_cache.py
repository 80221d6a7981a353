"""Keep built nnabla graphs and reuse them: inference scripts run the same graph on every chunk
and file instead of rebuilding it (the official scripts rebuild it per chunk or patch)."""
from collections import OrderedDict

import numpy as np


class GraphCache:
    """LRU cache of graphs keyed by input shape.

    ``build(shape)`` makes the graph (any object, e.g. ``(input_var, output_var)``); at most
    ``max_cached`` graphs are kept, and ``builds`` counts how many were made.
    """

    def __init__(self, build, max_cached=2):
        self.build = build
        self.max_cached = int(max_cached)
        self.builds = 0
        self._graphs = OrderedDict()

    def __call__(self, shape):
        shape = tuple(shape)
        graph = self._graphs.get(shape)
        if graph is not None:
            self._graphs.move_to_end(shape)
            return graph
        graph = self.build(shape)
        self.builds += 1
        self._graphs[shape] = graph
        while len(self._graphs) > self.max_cached:
            self._graphs.popitem(last=False)
        return graph


class GraphRunner:
    """Runs a network function on numpy arrays in test mode, building its graph once per
    input shape and reusing it (see :class:`GraphCache`).

    ``network(x_var)`` builds the graph and returns its output variable, or a tuple of them;
    ``context`` is anything :func:`common.context.resolve_context` accepts. ``runner(x)``
    returns a copy of the output (a tuple of copies for several outputs); intermediate
    buffers are freed after every call.
    """

    def __init__(self, network, context=None, max_cached=2):
        from common.context import resolve_context

        self.network = network
        self.ctx = resolve_context(context)
        self._graph = GraphCache(self._build, max_cached)

    @property
    def graph_builds(self):
        return self._graph.builds

    def _build(self, shape):
        import nnabla as nn
        import nnabla.functions as F

        from common.context import context_scope

        with nn.auto_forward(False), context_scope(self.ctx):
            x = nn.Variable(shape)
            y = self.network(x)
            outputs = y if isinstance(y, tuple) else (y,)
            for v in outputs:
                v.persistent = True
            end = outputs[0] if len(outputs) == 1 else F.sink(*outputs)
        return x, outputs, end

    def __call__(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        xv, outputs, end = self._graph(x.shape)
        xv.d = x
        end.forward(clear_buffer=True)
        ys = tuple(v.d.copy() for v in outputs)
        return ys if len(ys) > 1 else ys[0]


def import_backend(package, module="onnx_backend", attr="build_onnx_runner", backend=None):
    """``package.module.attr`` for an optional inference backend, or a one-line
    :class:`UserError` saying it (``backend``, default the module's name) is unavailable and
    to use the nnabla backend."""
    import importlib

    from common.errors import UserError

    try:
        return getattr(importlib.import_module(f"{package}.{module}"), attr)
    except ImportError as exc:
        name = backend or module.replace("_backend", "")
        raise UserError(f"backend '{name}' is not available: {exc} (use the nnabla "
                        "backend)") from None
