"""A block-level model of nnabla's caching allocator (``CachingAllocatorWithBucketsBase``,
``src/nbla/memory/caching_allocator_with_buckets.cpp``), which the memory planner feeds with
every array a training iteration creates and frees.

Sizes are rounded up to 512 B below 1 MiB and to 128 KiB above; requests of at most 1 MiB
are cut out of 1 MiB chunks (the "small" pool), larger ones get a block of their own (the
"large" pool). A request takes the smallest cached free block that fits and splits off the
rest; a released block is merged with free neighbours and cached. What the allocator
obtained from the system (``used``) only grows: it is what :mod:`ooctrain.measure` reads
from nnabla after each iteration.
"""
import bisect

__all__ = ["ROUND_SMALL", "ROUND_LARGE", "SMALL_ALLOC", "round_size", "CachingAllocatorModel"]

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
        self._absorb_free_neighbour(pool, block, "next", "prev")
        self._absorb_free_neighbour(pool, block, "prev", "next")
        self._cache(pool, block)

    def _absorb_free_neighbour(self, pool, block, side, back):
        """Merge the free block on ``side`` ("next" or "prev") of ``block`` into it; ``back``
        is the opposite link."""
        other = getattr(block, side)
        if other is None or other.locked:
            return
        self._uncache(pool, other)
        block.size += other.size
        beyond = getattr(other, side)
        setattr(block, side, beyond)
        if beyond is not None:
            setattr(beyond, back, block)

    @property
    def total_used(self):
        return self.used["small"] + self.used["large"]

    def snapshot(self):
        """Like :func:`ooctrain.measure.pool_used`: used bytes and cached free bytes."""
        return {"used": self.total_used,
                "free_small": sum(item[0] for item in self.free["small"]),
                "free_large": sum(item[0] for item in self.free["large"])}
