"""common.runtime.graph_cache: graphs built once per input shape and reused."""
import numpy as np

from common.runtime.graph_cache import GraphCache, GraphRunner


def test_builds_once_per_shape_and_evicts_least_recent():
    built = []
    cache = GraphCache(lambda shape: built.append(shape) or ("graph", shape), max_cached=2)
    assert cache((1, 2)) == ("graph", (1, 2))
    assert cache([1, 2]) is cache((1, 2)) and cache.builds == 1
    cache((3,))
    cache((1, 2))  # refreshes (1, 2); (3,) is now the oldest
    cache((4,))
    assert cache.builds == 3
    cache((1, 2))
    assert cache.builds == 3  # still cached
    cache((3,))
    assert cache.builds == 4 and built == [(1, 2), (3,), (4,), (3,)]


def test_runner_returns_one_output_or_a_tuple_and_reuses_its_graph():
    import nnabla.functions as F

    single = GraphRunner(lambda x: 2 * x)
    pair = GraphRunner(lambda x: (x + 1, F.sum(x, axis=1)))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(single(x), 2 * x)
    plus, total = pair(x)
    np.testing.assert_array_equal(plus, x + 1)
    np.testing.assert_array_equal(total, x.sum(axis=1))
    again = pair(x * 0)  # the outputs of a call are copies, not the graph's buffers
    np.testing.assert_array_equal(plus, x + 1)
    np.testing.assert_array_equal(again[1], np.zeros(2))
    assert pair.graph_builds == 1 and single.graph_builds == 1
