"""`make test`'s worker count (tests/support/workers.py): one more than the cores on an idle box,
one per core on a busy one."""

from tests.support.workers import workers


def test_an_idle_box_gets_a_worker_more_than_its_cores():
    assert workers(2, busy_fraction=0.05) == 3


def test_a_busy_box_gets_one_per_core():
    assert workers(2, busy_fraction=0.9) == 2  # another suite beside this one
