"""common.runtime.hugepages.small_pages: numpy's huge-page advice is off inside the block and
restored after it, also when blocks nest, overlap in threads or raise."""
import threading

import pytest

from common.runtime import hugepages

setter = hugepages._switch()
pytestmark = pytest.mark.skipif(setter is None, reason="this numpy has no huge-page switch")


def _advice():
    state = setter(False)
    setter(state)
    return state


@pytest.fixture(params=[True, False], ids=["advice-on", "advice-off"])
def initially(request):
    before = setter(request.param)
    yield request.param
    setter(before)


def test_off_inside_and_restored(initially):
    with hugepages.small_pages():
        assert _advice() is False
        with hugepages.small_pages():
            assert _advice() is False
        assert _advice() is False  # the outer block is still running
    assert _advice() is initially
    with pytest.raises(KeyError):
        with hugepages.small_pages():
            raise KeyError("boom")
    assert _advice() is initially


def test_overlapping_blocks_in_threads(initially):
    """A block that starts in one thread and ends while another thread's block runs must
    leave the advice off for the other and restore it only when that one ends."""
    entered, leave = threading.Event(), threading.Event()

    def other():
        with hugepages.small_pages():
            entered.set()
            leave.wait(10)

    worker = threading.Thread(target=other)
    worker.start()
    entered.wait(10)
    with hugepages.small_pages():
        leave.set()
        worker.join(10)  # the other block has ended; this one still runs
        assert _advice() is False
    assert _advice() is initially
