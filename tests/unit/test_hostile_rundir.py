"""One bad file never blocks another run; every tail and reader stays bounded and linear.

Every reader of a run directory takes any bytes: wrong JSON types, deep nesting, Infinity/NaN,
1e999 and 10**400, non-UTF-8, binary, a directory, FIFO or symlink where a file should be. It
uses what it can or leaves the run out with one warning line naming the file (issue 29). The
property tests feed arbitrary JSON values and bytes to each reader; the regression tests pin the
cases found (AttributeError in liveness/runs, RecursionError in paths, OverflowError in
processes, "seq": 1e999, "rank": Infinity, a deep --set value, the unbounded partial line and
the quadratic read_telemetry(last_n) on one 64 MiB line).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fake_runs import append_events, event, make_run_dir, write_exit
from tests.support.locations import ROOT
from traindeck.heartbeat import read_heartbeats
from traindeck.untrusted import json_object_problem, parse_json, read_json_object
from training.console.runs import format_runs_table, list_runs, run_summary
from training.console.stop import reap_orphans
from training.monitor.telemetry import device_ranks, read_telemetry
from training.profile import ProfileError, parse_override
from training.rundir import RunPaths, read_run_json
from training.rundir.control import ControlChannel, send
from training.rundir.events_file import EventReader, read_all, read_tail
from training.rundir.liveness import not_live_reason, supervisor_status, verified_state
from training.rundir.logs import rank_logs
from training.rundir.processes import ProcRef
from training.rundir.records import ExitRecord, RunRecord, parse_event
from training.rundir.series import SeriesStore
from training.rundir.snapshot import Folded, fold_file, load, load_or_rebuild
from tui.feed import RunFeed, TelemetryFeed, read_last_json_line, sane_sample
from tui.tail import TextTail
from tui.widgets.gpu_panel import DeviceView

T0 = 1_764_000_000.0
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])

# JSON values as a neighbour would write them: every type, Infinity/NaN, 1e999 (inf once parsed),
# integers far past a double, and the keys the readers look for, so the wrong types land where used.
KEYS = ["state", "supervisor", "pid", "create_time", "created", "host", "processes", "launcher", "returncode",
        "error", "gpu_queue", "rendezvous", "nodes", "rank", "step", "epoch", "t", "seq", "action", "devices",
        "kind", "values", "split", "gpus", "workers", "index", "util", "profile", "mode", "rank_offset"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
           | st.sampled_from(["running", "queued", "finished", "metric", "telemetry", "save", "train"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=6),
                      max_leaves=25)
OBJECTS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=10)
JUNK_BYTES = st.binary(max_size=300) | st.sampled_from([
    b"[" * 100_000, b"{\"a\":" * 50_000, b"\xff\xfe\x00binary", b"1e999", b"[1]", b"5", b"true",
    b"{\"pid\": Infinity}", b"{\"state\": \"running\", \"supervisor\": {\"pid\": 1e999, \"create_time\": NaN}}"])


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


def _runs_dir(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir(exist_ok=True)
    return runs


def _good_run(runs: Path, name: str = "20261124-100000-good") -> RunPaths:
    paths = make_run_dir(runs, name, state="finished", created=T0)
    append_events(paths, [event(T0 + 1, "metric", step=3, epoch=1, split="train", values={"loss": 0.5})])
    write_exit(paths, returncode=0, state="finished", t=T0 + 2)
    return paths


def _bad_run(runs: Path, run_json: bytes, name: str = "20261124-110000-bad") -> RunPaths:
    root = runs / name
    for sub in ("", "logs", "heartbeats", "checkpoints"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_bytes(run_json)
    return RunPaths(root)


class _Deadline:
    """A reader that blocks (a FIFO opened without O_NONBLOCK) fails the test instead of hanging it."""

    def __init__(self, seconds: int = 10):
        self.seconds = seconds

    def __enter__(self):
        def _expired(signum, frame):
            raise AssertionError(f"a reader blocked for {self.seconds} s")

        self._old = signal.signal(signal.SIGALRM, _expired)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old)


# ---- the central reader -------------------------------------------------------------------

@SETTINGS
@given(data=JUNK_BYTES)
def test_the_json_object_reader_takes_any_bytes(tmp_path, data):
    path = tmp_path / "record.json"
    path.write_bytes(data)
    value = read_json_object(path)
    assert value is None or isinstance(value, dict)
    problem = json_object_problem(path)
    assert (problem is None) == (value is not None) and (problem is None or len(problem) <= 120)


def test_special_files_read_as_missing_and_never_block(tmp_path):
    (tmp_path / "dir.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "target.json").write_text('{"state": "running"}')
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    with _Deadline():
        for name in ("dir.json", "fifo.json", "link.json", "missing.json"):
            assert read_json_object(tmp_path / name) is None
        assert json_object_problem(tmp_path / "fifo.json") == "not a regular file"
        assert json_object_problem(tmp_path / "link.json") == "a symbolic link (not followed)"
        assert json_object_problem(tmp_path / "missing.json") is None


def test_parse_json_bounds_nesting_and_names_the_reason():
    for junk, reason in ((b"[" * 100_000, "nested"), (b"[" * 70 + b"]" * 70, "nested more than 64"),
                         (b"\xff{}", "UTF-8")):
        with pytest.raises(ValueError, match=reason):
            parse_json(junk)
    assert parse_json(b'{"a": [[1]]}') == {"a": [[1]]}


# ---- run.json, exit.json: records, liveness, the listing ---------------------------------

@SETTINGS
@given(run_json=VALUES, exit_json=VALUES)
def test_run_and_exit_records_take_any_json_value(tmp_path, run_json, exit_json):
    runs = _runs_dir(tmp_path)
    paths = _bad_run(runs, _dump(run_json).encode())
    paths.exit_json.write_text(_dump(exit_json))
    data = read_run_json(paths)
    assert isinstance(data, dict)
    record = RunRecord.from_json(data)
    assert record.created is None or isinstance(record.created, float)
    assert record.supervisor is None or (isinstance(record.supervisor.pid, int) and record.supervisor.pid > 0)
    ExitRecord.from_json(read_json_object(paths.exit_json))
    state, live, note = verified_state(paths)
    assert isinstance(live, bool) and isinstance(note, str)
    supervisor_status(data)
    assert not_live_reason(paths) is None or isinstance(not_live_reason(paths), str)
    summary = run_summary(paths)
    assert format_runs_table([summary])


@SETTINGS
@given(supervisor=VALUES)
def test_proc_refs_take_any_json_value(supervisor):
    ref = ProcRef.from_json(supervisor)
    assert ref is None or (0 < ref.pid < 2**31 and ref.create_time == ref.create_time)


@pytest.mark.parametrize("content", [b"[1]", b"5", b"true", b"[" * 100_000, b'{"pid": Infinity}',
                                     b'{"state": "running", "supervisor": {"pid": Infinity, "create_time": 1}}',
                                     b'{"state": "running", "supervisor": [1], "created": 1e999}',
                                     b'{"state": ["running"], "host": 5, "processes": 7}', b"\xff\xfe binary"])
def test_one_bad_run_json_never_blocks_the_listing_or_the_reaper(tmp_path, content):
    runs = _runs_dir(tmp_path)
    good = _good_run(runs)
    bad = _bad_run(runs, content)
    warnings: list[str] = []
    summaries = list_runs(runs, warn=warnings.append)
    assert good.id in [s.id for s in summaries]
    table = format_runs_table(summaries)
    assert good.id in table
    if read_json_object(bad.run_json) is None:  # junk: left out, with one line naming the file
        assert bad.id not in [s.id for s in summaries]
        assert len(warnings) == 1 and str(bad.run_json) in warnings[0]
    else:  # an object with wrong types: shown, with what could be used
        assert warnings == [] and bad.id in table
    assert reap_orphans(runs, warn=warnings.append) is not None
    verified_state(bad)
    assert not_live_reason(bad) is None or isinstance(not_live_reason(bad), str)


def test_runs_command_prints_the_good_runs_and_one_warning_naming_the_file(tmp_path):
    runs = _runs_dir(tmp_path)
    good = _good_run(runs)
    bad = _bad_run(runs, b"[1]")
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "TRAINDECK_RUNS_DIR": str(runs)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert good.id in done.stdout and bad.id not in done.stdout
    assert done.stderr.strip().splitlines() == [f"warning: {bad.run_json}: JSON list, not an object"]


def test_a_bad_exit_json_is_warned_about_and_the_run_still_listed(tmp_path):
    runs = _runs_dir(tmp_path)
    good = _good_run(runs)
    good.exit_json.write_bytes(b"{" * 10_000)
    warnings: list[str] = []
    summaries = list_runs(runs, warn=warnings.append)
    assert [s.id for s in summaries] == [good.id] and summaries[0].returncode is None
    assert len(warnings) == 1 and str(good.exit_json) in warnings[0]


def test_the_reaper_still_reaps_a_real_orphan_beside_bad_runs(tmp_path):
    runs = _runs_dir(tmp_path)
    for i, junk in enumerate((b"[1]", b'{"state": "running", "supervisor": {"pid": 1e999, "create_time": 1}}',
                              b'{"state": "running", "processes": 5, "supervisor": 5}')):
        _bad_run(runs, junk, name=f"20261124-11000{i}-bad")
    orphan = make_run_dir(runs, "20261124-120000-orphan", state="running", created=T0,
                          supervisor={"pid": os.getpid(), "create_time": 1.0})  # our pid, not our start: gone
    reaped = reap_orphans(runs, warn=lambda line: pytest.fail(line))
    assert orphan.root in [p.root for p in reaped]
    assert json.loads(orphan.exit_json.read_text())["state"] == "failed"


# ---- control.json, heartbeats --------------------------------------------------------------

@SETTINGS
@given(value=VALUES)
def test_control_and_heartbeats_take_any_json_value(tmp_path, value):
    paths = RunPaths(tmp_path / "run")
    paths.heartbeats.mkdir(parents=True, exist_ok=True)
    paths.control.write_text(_dump(value))
    cmd = ControlChannel(paths.root, since=0.0, min_interval_s=0.0).poll()
    assert cmd is None or isinstance(cmd.seq, int)
    assert send(paths, "save") >= 1
    (paths.heartbeats / "rank-0.json").write_text(_dump(value))
    beats = read_heartbeats(paths.root)
    assert all(isinstance(rank, int) for rank in beats)
    device_ranks(beats)


def test_control_seq_1e999_and_heartbeat_rank_infinity_are_skipped(tmp_path):
    paths = RunPaths(tmp_path / "run")
    paths.heartbeats.mkdir(parents=True)
    paths.control.write_text('{"seq": 1e999, "action": "save", "t": 1}')
    assert ControlChannel(paths.root, since=0.0, min_interval_s=0.0).poll() is None
    assert send(paths, "save") == 1  # the junk seq is no count to go on from
    (paths.heartbeats / "rank-0.json").write_text('{"rank": Infinity, "step": 3}')
    (paths.heartbeats / "rank-1.json").write_text('{"rank": 1, "step": 3, "devices": 5}')
    assert read_heartbeats(paths.root) == {1: {"rank": 1, "step": 3, "devices": []}}


def test_a_deeply_nested_set_value_is_a_profile_error():
    for value in ("[" * 100_000, "[" * 100 + "]" * 100):
        with pytest.raises(ProfileError, match="nests too deeply"):
            parse_override(f"train.lr={value}")


# ---- events, telemetry, snapshot, logs: any bytes ------------------------------------------

@SETTINGS
@given(lines=st.lists(JUNK_BYTES | VALUES.map(lambda v: _dump(v).encode()) | OBJECTS.map(
    lambda v: _dump({**v, "kind": v.get("kind", "metric")}).encode()), max_size=12))
def test_jsonl_readers_take_any_lines(tmp_path, lines):
    paths = RunPaths(tmp_path / "run")
    (paths.root / "logs").mkdir(parents=True, exist_ok=True)
    data = b"\n".join(lines)
    for path in (paths.events, paths.telemetry, paths.logs / "rank-0.log"):
        path.write_bytes(data)
    events = read_all(paths.events)
    assert all(isinstance(e, dict) for e in events)
    for e in events:
        parse_event(e)
    SeriesStore().add_events(events)
    read_tail(paths.events, 1 << 10)
    for n in (1, 3):
        assert len(read_telemetry(paths.telemetry, last_n=n)) <= n
    folded, _ = load_or_rebuild(paths.events)
    folded.replay()
    feed = TelemetryFeed(paths)
    latest = feed.poll()
    for gpu in (latest or {}).get("gpus") or []:
        DeviceView.from_gpu(gpu)
    for i, worker in enumerate((latest or {}).get("workers") or []):
        DeviceView.from_worker(worker, i)
    read_last_json_line(paths.telemetry)
    TextTail(paths.logs / "rank-0.log").read()
    rank_logs(paths)
    _good = make_run_dir(tmp_path / "runs", "20261124-100000-x", state="finished", created=T0)
    _good.events.write_bytes(data)
    run_summary(_good)


@SETTINGS
@given(sample=OBJECTS)
def test_telemetry_samples_reach_the_panels_sane(sample):
    sane = sane_sample({**sample, "kind": "telemetry"})
    for gpu in sane.get("gpus") or []:
        view = DeviceView.from_gpu(gpu)
        assert view.util is None or view.util == view.util
    for i, worker in enumerate(sane.get("workers") or []):
        DeviceView.from_worker(worker, i)


@SETTINGS
@given(data=JUNK_BYTES)
def test_a_junk_snapshot_is_rebuilt(tmp_path, data):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"v": 1, "t": T0, "kind": "metric", "step": 1, "values": {"loss": 1.0}}) + "\n")
    (tmp_path / "series.snapshot.npz").write_bytes(data)
    assert load(events) is None
    folded, rebuilt = load_or_rebuild(events)
    assert rebuilt and folded.store.series


def test_a_snapshot_with_hostile_numbers_is_rebuilt(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"v": 1, "t": T0, "kind": "metric", "step": 1, "values": {"loss": 1.0}}) + "\n")
    folded = fold_file(events)
    good = folded.to_bytes()
    assert Folded.from_bytes(good).offset == folded.offset
    import io

    import numpy as np

    for key, value in (("capacity", 10**12), ("capacity", float("inf")), ("series", 5), ("offset", -1),
                       ("story", [[1, 5]]), ("last_step", float("inf"))):
        with np.load(io.BytesIO(good)) as z:
            arrays = {name: z[name] for name in z.files}
        meta = json.loads(arrays["meta"].tobytes())
        meta[key] = value
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with pytest.raises(ValueError):
            Folded.from_bytes(buf.getvalue())


def test_special_files_in_a_run_directory_never_block_a_viewer(tmp_path):
    runs = _runs_dir(tmp_path)
    good = _good_run(runs)
    paths = make_run_dir(runs, "20261124-130000-odd", state="finished", created=T0)
    paths.exit_json.mkdir()
    os.mkfifo(paths.events)
    os.mkfifo(paths.telemetry)
    os.mkfifo(paths.profile)
    os.mkfifo(paths.heartbeats / "rank-0.json")
    os.mkfifo(paths.control)
    os.mkfifo(paths.root / "series.snapshot.npz")
    os.mkfifo(paths.logs / "rank-0.log")
    with _Deadline():
        warnings: list[str] = []
        assert {s.id for s in list_runs(runs, warn=warnings.append)} == {good.id, paths.id}
        assert warnings == [f"warning: {paths.exit_json}: not a regular file"]
        assert read_all(paths.events) == [] and read_telemetry(paths.telemetry, last_n=5) == []
        assert read_heartbeats(paths.root) == {}
        assert ControlChannel(paths.root, since=0.0, min_interval_s=0.0).poll() is None
        assert TextTail(paths.logs / "rank-0.log").read() == ([], False)
        assert RunFeed(paths).poll() is not None
        assert TelemetryFeed(paths).interval_s == 1.0


# ---- bounded memory, linear time -----------------------------------------------------------

LONG_LINE_BYTES = 64 << 20


@pytest.fixture(scope="module")
def one_long_line(tmp_path_factory) -> Path:
    """64 MiB without a newline (tqdm's \\r redraws never end a line), between telemetry samples."""
    path = tmp_path_factory.mktemp("long") / "telemetry.jsonl"
    sample = json.dumps({"v": 1, "t": T0, "kind": "telemetry", "gpus": []}).encode()
    with open(path, "wb") as f:
        f.write(sample + b"\n")
        f.write((b"\r 42%|####      | 4200/10000 [00:10<00:14, 400it/s]" * (LONG_LINE_BYTES // 52 + 1))
                [:LONG_LINE_BYTES])
        f.write(b"\n" + sample + b"\n" + sample + b"\n")
    return path


def test_read_telemetry_last_n_is_linear_on_one_long_line(one_long_line):
    start = time.perf_counter()
    tracemalloc.start()
    try:
        samples = read_telemetry(one_long_line, last_n=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert len(samples) == 3  # the two after the long line and the one before it
    assert elapsed < 5.0, f"read_telemetry(last_n=3) took {elapsed:.1f} s on one 64 MiB line"
    assert peak < 8 << 20, f"it held {peak >> 20} MiB"


def test_tails_keep_bounded_memory_on_one_long_line(one_long_line):
    tracemalloc.start()
    try:
        reader = EventReader(one_long_line)
        events = []
        while True:
            batch = reader.read()
            events.extend(batch)
            if not batch and reader.at_end:
                break
        assert len(events) == 3 and reader.skipped == 1 and reader.pending_bytes == 0
        tail = TextTail(one_long_line)
        tail.read()
        with open(one_long_line, "ab") as f:  # the bar goes on, still without a newline
            f.write(b"\r 43%|####" * 400_000)
        tail.read()
        assert len(tail._partial) <= 64 << 10
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20, f"the tails held {peak >> 20} MiB"


def test_run_json_nodes_of_any_type_or_a_path_name_no_node():
    from training.rundir.node_views import other_hosts

    assert other_hosts({"nodes": True}) == [] and other_hosts({"nodes": 5}) == []
    assert other_hosts({"nodes": [{"host": "../../home/me"}, {"host": ".."}, {"host": ""}, {"host": "gpu-b"}]}) \
        == ["gpu-b"]


def test_a_rank_logs_terminal_sequences_are_not_shown_as_text(tmp_path):
    """Rich's live bar (TTY_COMPATIBLE, the lightning preset) and Keras' bar write cursor moves and
    colours into the log; the rank log view shows what a terminal would: the latest drawing."""
    from tui.tail import TextTail

    log = tmp_path / "rank-0.log"
    log.write_bytes(b"\x1b[2K\x1b[1A\x1b[1;32mEpoch 0/2\x1b[0m 3/8 loss 0.41\r\x1b[2KEpoch 0/2 4/8 loss 0.40\n"
                    b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ text\x07\n")
    lines, _ = TextTail(log).read()
    assert lines == ["Epoch 0/2 4/8 loss 0.40", "link text"]


def test_text_a_neighbour_wrote_reaches_no_terminal_as_escapes(tmp_path):
    # run.json, an event and a profile.toml with OSC (title), SGR (colour) and a bidi override:
    # --runs, the run model's records and --compare show them as '?', newlines kept in messages.
    hostile = "cpu\x1b]0;PWNED\x07\x1b[31m\u202e"
    paths = make_run_dir(tmp_path / "runs", "20261124-183000-cpu", state="finished", profile_name=hostile,
                         created=1764000000.0, profile_toml=f'name = "x"\n[train]\ntask = "{hostile}"\n'.replace(
                             "\x1b", "\\u001b").replace("\x07", "\\u0007"))
    table = format_runs_table(list_runs(tmp_path / "runs"))
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table and "cpu?]0;PWNED" in table
    assert RunRecord.from_json({"profile": hostile}).profile == "cpu?]0;PWNED??[31m?"
    assert parse_event(event(1.0, "log", level="warning", message="a\nb\x1b[2J")).message == "a\nb?[2J"
    from training.console.compare import flat_config
    from training.rundir.paths import read_profile_data

    assert flat_config(read_profile_data(paths))["train.task"] == "cpu?]0;PWNED??[31m?"
