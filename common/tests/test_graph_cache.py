from common.runtime.graph_cache import GraphCache


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
