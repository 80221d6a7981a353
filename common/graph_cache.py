"""Keep built nnabla graphs and reuse them: inference scripts run the same graph on every chunk
and file instead of rebuilding it (the official scripts rebuild it per chunk or patch)."""
from collections import OrderedDict


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
