"""The series store: bounded memory, bounded views, spikes kept, smoothing, names."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from training.rundir.events_file import make_event
from training.rundir.series import Series, SeriesStore

KEY = ("train", "loss")


def _fill(store: SeriesStore, n: int, spike_at: int | None = None) -> None:
    # Straight to Series.add in one loop: 10^6 events as dicts would only test the dict code.
    s = None
    for i in range(n):
        value = 1.0 / (1.0 + i * 1e-4)
        if i == spike_at:
            value = 50.0
        if s is None:
            store.add("train", "loss", i, value, epoch=i // 1000)
            s = store.get(KEY)
        else:
            s.add(float(i), float(i // 1000), value, 0.0)


def test_memory_and_view_stay_bounded_at_a_million_points():
    store = SeriesStore(capacity=1024, recent=2048)
    _fill(store, 1_000_000, spike_at=777_777)
    s = store.get(KEY)
    assert s.count == 1_000_000
    assert store.stored_points <= 1024 + 1 + 2048
    for width in (40, 100, 300):
        xs, ys = store.view(KEY, width)
        assert 0 < len(xs) == len(ys) <= 2 * width
        assert xs == sorted(xs)
        assert max(ys) == 50.0  # min/max per bucket: a one-step spike survives decimation
        assert min(ys) == pytest.approx(1.0 / (1.0 + 999_999 * 1e-4), rel=1e-6)
        assert xs[0] >= 0 and xs[-1] <= 999_999


def test_view_cost_does_not_grow_with_length():
    small, big = SeriesStore(), SeriesStore()
    _fill(small, 1_000)
    _fill(big, 1_000_000)

    def cost(store):
        store.view(KEY, 100)  # warm up
        t0 = time.perf_counter()
        for _ in range(20):
            store.view(KEY, 100, smoothing=0.5)
            store.view(KEY, 100)
        return time.perf_counter() - t0

    # Both read O(capacity) stored points; 10x is a generous bound for a noisy shared machine.
    assert cost(big) < 10 * cost(small) + 0.05


def test_short_series_is_exact():
    store = SeriesStore()
    store.add_events([make_event("metric", step=i, epoch=1, split="train", values={"loss": float(10 - i)})
                      for i in range(10)])
    xs, ys = store.view(KEY, 100)
    assert xs == [float(i) for i in range(10)] and ys == [float(10 - i) for i in range(10)]


def test_pairwise_merge_keeps_sum_count_min_max():
    s = Series(capacity=8, recent=4)
    values = [float(v) for v in np.random.default_rng(0).normal(size=1000)]
    for i, v in enumerate(values):
        s.add(float(i), 0.0, v, 0.0)
    xs, ymin, ymax, ysum, n = s._columns("step")
    assert n.sum() == 1000 and ysum.sum() == pytest.approx(sum(values))
    assert ymin.min() == min(values) and ymax.max() == max(values)
    assert s.stored_points <= 8 + 1 + 4


def test_smoothing_is_an_ema_and_keeps_length_bounded():
    store = SeriesStore()
    for i in range(100):
        store.add("train", "loss", i, 1.0 if i % 2 else 0.0)
    xs, raw = store.view(KEY, 200)
    _, smooth = store.view(KEY, 200, smoothing=0.9)
    assert len(smooth) == 100 and np.std(smooth[50:]) < 0.1 * np.std(raw[50:])
    assert smooth[-1] == pytest.approx(0.5, abs=0.1)
    # the first point is not dragged to 0 by the EMA's start (debiased)
    assert smooth[0] == pytest.approx(0.0) and smooth[1] > 0.4
    # at a million points the smoothed view is one point per group
    big = SeriesStore()
    _fill(big, 200_000)
    xs, ys = big.view(KEY, 100, smoothing=0.99)
    assert len(xs) <= 100 and all(math.isfinite(y) for y in ys)


def test_log_y_drops_non_positive_values():
    store = SeriesStore()
    for i, v in enumerate([10.0, 0.0, 100.0, -1.0, 1000.0]):
        store.add("train", "loss", i, v)
    xs, ys = store.view(KEY, 100, log_y=True)
    assert xs == [0.0, 2.0, 4.0] and ys == pytest.approx([1.0, 2.0, 3.0])


def test_epoch_axis():
    store = SeriesStore()
    for step in range(30):
        store.add("val", "loss", step, float(step), epoch=step // 10)
    xs, ys = store.view(("val", "loss"), 3, x="epoch")
    assert set(xs) == {0.0, 1.0, 2.0}
    store.add("train", "acc", 1, 0.5)  # no epoch: nothing to draw on an epoch axis
    assert store.view(("train", "acc"), 10, x="epoch") == ([], [])


def test_add_events_names_and_nonfinite():
    store = SeriesStore()
    events = [
        make_event("metric", step=1, epoch=1, split="train", values={"loss": 2.0, "loss/color": 1.1, "lr": 3e-3}),
        make_event("metric", step=1, epoch=1, split="val", values={"loss": 2.5, "acc": 0.1}),
        make_event("metric", step=2, split="train", values={"loss": float("nan"), "lr": "junk"}),
        make_event("checkpoint", path="x.pt"),
        {"kind": "metric", "values": "not a dict"},
    ]
    assert store.add_events(events) == 6  # nan counted as a point to the series, not plotted
    assert store.names() == [("train", "loss"), ("val", "loss"), ("train", "loss/color"), ("train", "lr"),
                             ("val", "acc")]
    loss = store.get(KEY)
    assert loss.count == 1 and loss.nonfinite == 1 and loss.first_nonfinite_step == 2.0
    assert store.last(("val", "acc"))[2] == 0.1


def test_series_count_is_bounded():
    store = SeriesStore(max_series=3)
    store.add_events([make_event("metric", step=1, values={f"m{i}": 1.0 for i in range(10)})])
    assert len(store.names()) == 3 and store.dropped_series == 7


def test_empty_and_missing():
    store = SeriesStore()
    assert store.view(KEY, 100) == ([], [])
    with pytest.raises(ValueError):
        Series(capacity=7)
