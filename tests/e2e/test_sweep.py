"""A sweep end to end (issue 34): `run.py --profile cpu --sweep ... --sweep ...` expands a 3 x 2 grid
into six real runs started by the sweep's own detached runner through the box's GPU queue, at
most `--parallel` live at once; `--compare` on the sweep prints the six ranked, the best marked and
the two differing keys as columns; `--export --format tensorboard` reads back (with tensorboard's
own event reader) as the run's series; `--stop SWEEP` on a sweep that is still starting runs
cancels the rest.

The runs are tiny (single mode, one epoch of 512 samples: a few seconds each on a loaded 2-core
box); one sweep serves every check of it.
"""

from __future__ import annotations

import json

import pytest

from tests.support.waiting import wait_for
from training.console.sweeps import find_sweep, sweep_status
from training.rundir import RunPaths, read_json, read_run_json
from training.rundir.snapshot import fold_file
from training.rundir.sweep_dir import read_sweep, sweep_runs

pytestmark = pytest.mark.slow

TINY = ["--set", "train.epochs=1", "--set", "task.samples=512", "--set", "launch.mode=single",
        "--set", "launch.nproc_per_node=1", "--set", "train.log_every=2", "--set", "checkpoint.every_epochs=0"]
GRID = ["--sweep", "train.lr=1e-3,3e-3,1e-2", "--sweep", "train.batch_size=32,64"]
PARALLEL = 3


def _main(argv, capsys):
    from run import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def sweep(runs_dir):
    """The 3 x 2 sweep, run to its end: (runs_dir, sweep paths)."""
    from run import main

    assert main(["--runs-dir", str(runs_dir), "--profile", "cpu", *TINY, *GRID, "--parallel", str(PARALLEL)]) == 0
    paths = find_sweep(runs_dir, "sweep-")
    wait_for(lambda: (read_sweep(paths) or None) and read_sweep(paths).state == "finished"
             and not sweep_status(paths).runs_live, timeout=120, what="the sweep's end")
    return runs_dir, paths


def test_a_3x2_sweep_runs_lists_compares_and_exports(sweep, capsys, tmp_path):
    """One sweep for every check (six real runs are the module's cost): under xdist the checks
    split across workers would run it once per worker."""
    check_the_grid_runs_through_the_queue(sweep)
    check_runs_lists_the_sweep_as_a_group(sweep, capsys)
    check_compare_ranks_the_six_with_the_keys_that_differ(sweep, capsys)
    check_tensorboard_export_reads_back_as_the_series(sweep, capsys, tmp_path / "tb")
    check_csv_export_has_every_point(sweep, capsys, tmp_path / "csv")


def check_the_grid_runs_through_the_queue(sweep):
    runs_dir, paths = sweep
    record = read_sweep(paths)
    assert [p.state for p in record.points] == ["started"] * 6
    runs = sweep_runs(runs_dir, paths.id)
    assert len(runs) == 6
    seen = set()
    for i, run in enumerate(runs):
        data = read_run_json(run)
        assert data["sweep"] == {"id": paths.id, "point": i}
        assert data["queue"] is True  # through the box's GPU queue, as --queue starts it
        assert read_json(run.exit_json)["state"] == "finished", run.supervisor_log.read_text()
        seen.add((record.points[i].sets["train.lr"], record.points[i].sets["train.batch_size"]))
    assert len(seen) == 6
    # --parallel 3: never more than three live at once, and the fourth started after one ended.
    spans = [(read_run_json(r)["created"], read_json(r.exit_json)["t"]) for r in runs]
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= PARALLEL
    assert spans[3][0] >= min(e for _, e in spans[:3]) - 0.5


def check_runs_lists_the_sweep_as_a_group(sweep, capsys):
    runs_dir, paths = sweep
    code, out, _ = _main(["--runs-dir", str(runs_dir), "--runs"], capsys)
    assert code == 0
    assert out.splitlines()[0].startswith(f"sweep {paths.id}: finished, 6/6 started")
    assert sum(1 for line in out.splitlines() if line.startswith("  2")) == 6  # its runs, indented below it


def check_compare_ranks_the_six_with_the_keys_that_differ(sweep, capsys):
    runs_dir, paths = sweep
    code, out, _ = _main(["--runs-dir", str(runs_dir), "--compare", paths.id], capsys)
    assert code == 0, out
    lines = out.splitlines()
    header = lines[0].split()
    assert header[-2:] == ["train.batch_size", "train.lr"]
    rows = [line for line in lines[1:7]]
    assert rows[0].startswith("*") and not any(r.startswith("*") for r in rows[1:])
    assert "config that differs: train.batch_size, train.lr" in out
    code, out, _ = _main(["--runs-dir", str(runs_dir), "--compare", paths.id, "--json"], capsys)
    data = json.loads(out)
    assert [r["rank"] for r in data["runs"]] == [1, 2, 3, 4, 5, 6]
    values = [r["monitor_value"] for r in data["runs"]]
    assert values == sorted(values) and data["runs"][0]["best"]
    assert data["differs"] == ["train.batch_size", "train.lr"]
    assert all(set(r["config"]) == {"train.batch_size", "train.lr"} for r in data["runs"])


def check_tensorboard_export_reads_back_as_the_series(sweep, capsys, out_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    runs_dir, paths = sweep
    run = sweep_runs(runs_dir, paths.id)[0]
    code, out, err = _main(["--runs-dir", str(runs_dir), "--export", run.id, "--format", "tensorboard",
                            str(out_dir)], capsys)
    assert code == 0, err
    acc = EventAccumulator(str(out_dir), size_guidance={"tensors": 0})
    acc.Reload()
    store = fold_file(run.events).store
    # tensorboard.summary's writer stores a scalar as a 0-d tensor (the scalars plugin's v2 form).
    assert sorted(acc.Tags()["tensors"]) == sorted(f"{split}/{name}" for split, name in store.names())
    for split, name in store.names():
        series = store.get((split, name))
        got = [(e.step, float(make_ndarray(e.tensor_proto)), e.wall_time) for e in acc.Tensors(f"{split}/{name}")]
        want = [(int(step), value, t) for step, _epoch, value, t in series.recent]
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-6)  # float32 in the file
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want], abs=1e-3)


def check_csv_export_has_every_point(sweep, capsys, tmp_path):
    tmp_path.mkdir()
    runs_dir, paths = sweep
    run = sweep_runs(runs_dir, paths.id)[0]
    code, out, _ = _main(["--runs-dir", str(runs_dir), "--export", run.id, "--format", "csv", str(tmp_path)], capsys)
    assert code == 0
    rows = (tmp_path / f"{run.id}.csv").read_text().splitlines()
    store = fold_file(run.events).store
    assert rows[0] == "step,epoch,t,split,name,value"
    assert len(rows) - 1 == sum(store.get(k).count for k in store.names())


def test_stop_sweep_cancels_what_has_not_started(runs_dir, capsys):
    code, out, err = _main(["--runs-dir", str(runs_dir), "--profile", "cpu", *TINY, "--set", "train.epochs=50",
                            "--sweep", "train.lr=1e-3,3e-3,1e-2"], capsys)
    assert code == 0, err
    paths = find_sweep(runs_dir, "sweep-")
    wait_for(lambda: [r for r in sweep_runs(runs_dir, paths.id) if read_run_json(r).get("state") == "running"],
             timeout=30, what="the sweep's first run training")
    code, out, err = _main(["--runs-dir", str(runs_dir), "--stop", paths.id], capsys)
    assert code == 0, err
    record = read_sweep(paths)
    assert record.state == "stopped"
    assert [p.state for p in record.points][1:] == ["cancelled", "cancelled"]
    (first,) = sweep_runs(runs_dir, paths.id)
    assert read_json(RunPaths(first.root).exit_json)["state"] == "stopped"
    assert "1 live runs stopped, 2 not started" in out


def test_a_bad_sweep_value_is_refused_before_anything_starts(runs_dir, capsys):
    code, _, err = _main(["--runs-dir", str(runs_dir), "--profile", "cpu", "--sweep", "train.lr=1e-3,fast"], capsys)
    assert code != 0
    assert "--sweep" in err and "train.lr=fast" in err and "Traceback" not in err
    assert not list(runs_dir.iterdir())
