"""Reliability: bad input of every kind gives a clear message and never a crash.

- malformed and adversarial profiles, fuzzed with hypothesis through `run.py --check --profile
  PATH` in-process (run.main): exit 2 with one paragraph on stderr, never a traceback;
- scripts that are missing at launch, exit 1 at once, print nothing, or flood stdout with binary
  junk and endless lines (the supervisor and its log tailer must neither crash nor balloon);
- an events.jsonl with corrupt lines: every reader skips them, counts them, and shows the rest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run
from tests.support.live_runs import events, statuses, wait_done
from tests.support.processes import assert_gone, assert_no_processes_of, recorded
from tests.support.profiles import custom_profile, profile_from
from training.console import runs
from training.rundir import RunPaths, RunState, create_run_dir, read_json, write_json_atomic
from training.rundir.events_file import EventReader, encode, make_event
from tui.headless import follow

CPU_PROFILE = (Path(run.__file__).resolve().parent / "profiles" / "cpu.toml").read_text()
FUZZ_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"traindeck-fuzz-{os.getpid()}"


def _check(path: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run.main(["--check", "--profile", str(path), "--runs-dir", str(FUZZ_DIR / "runs"), *extra])
    return code, out.getvalue(), err.getvalue()


def _assert_clear(code: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, out + err
    assert code in (0, 1, 2), (code, out, err)
    if code == 2:
        text = err.strip()
        assert text.startswith("traindeck: "), err
        assert "\n\n" not in text, f"more than one paragraph:\n{err}"
    else:  # a valid profile: the preflight report, pass or fail
        assert "preflight" in out, out


def _write(data: str | bytes) -> Path:
    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    path = FUZZ_DIR / "fuzz.toml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


# ---- profiles ----------------------------------------------------------------------------------

KEYS = {"launch": ["mode", "nproc_per_node", "backend", "stop_grace_s", "env", "nnodes", "rdzv_endpoint",
                   "rdzv_backend", "max_restarts", "node_rank"],
        "train": ["task", "script", "module", "args", "epochs", "batch_size", "lr", "log_every", "amp",
                  "grad_accum", "steps_per_epoch", "optimizer", "schedule", "seed", "warmup_steps"],
        "task": ["samples", "features", "hidden", "classes", "noise"],
        "checkpoint": ["every_epochs", "every_steps", "keep_last", "resume", "monitor"],
        "telemetry": ["interval_s"], "hardware": ["gpus"], "metrics": ["train", "val", "checkpoint"],
        "export": ["onnx", "path", "opset"], "bogus": ["x"]}

scalars = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=40),
    st.sampled_from(["; rm -rf ~", "$(id)", "../../../../etc/passwd", "/dev/zero", "\x00", "ddp", "tiny",
                     "(?P<x", "a" * 5000, "nccl", "127.0.0.1:99999", "-1", "1e309"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def mutated_profiles(draw) -> str:
    """The shipped cpu profile with a few keys set to adversarial values (valid TOML, bad content)."""
    lines = CPU_PROFILE.splitlines()
    extra: dict[str, list[str]] = {}
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(KEYS)))
        key = draw(st.sampled_from(KEYS[section] + ["typo_" + KEYS[section][0]]))
        extra.setdefault(section, []).append(f"{key} = {_toml_value(draw(values))}")
    out, section = [], None
    for line in lines:
        m = re.match(r"\[(\w+)\]", line)
        if m:
            out += extra.pop(section, []) if section else []
            section = m.group(1)
        if section in extra and re.match(r"(\w+)\s*=", line) and any(
                e.split(" =")[0] == line.split("=")[0].strip() for e in extra[section]):
            continue  # replaced
        out.append(line)
    out += extra.pop(section, []) if section else []
    for sec, entries in extra.items():
        out += [f"[{sec}]", *entries]
    return "\n".join(out) + "\n"


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated_profiles())
def test_fuzzed_profiles_through_run_py_check_exit_2_with_one_paragraph(text):
    _assert_clear(*_check(_write(text)))


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.builds(lambda n, c: c * n, st.integers(1000, 50000), st.sampled_from(["[", "{a=", "a.", '"']))))
def test_arbitrary_bytes_as_a_profile_exit_2_with_one_paragraph(data):
    code, out, err = _check(_write(data))
    _assert_clear(code, out, err)


@FUZZ
@given(st.text(max_size=60))
def test_fuzzed_set_overrides_exit_2_with_one_paragraph(override):
    # "--set=VALUE": a value starting with "-" would otherwise be argparse's usage error (exit 2 too).
    code, out, err = _check(Path(run.__file__).resolve().parent / "profiles" / "cpu.toml", f"--set={override}")
    _assert_clear(code, out, err)


@pytest.mark.parametrize("key", ["checkpoint.resume", "train.script"])
def test_overlong_paths_in_a_profile_exit_2_not_oserror(key):
    # ENAMETOOLONG from the OS used to escape the loader as a traceback.
    section, name = key.split(".")
    body = {"checkpoint.resume": '[train]\ntask = "tiny"\n[checkpoint]\nresume = "%s"\n',
            "train.script": '[train]\nscript = "%s"\n'}[key] % ("a" * 5000)
    code, out, err = _check(_write('name = "long"\n' + body))
    _assert_clear(code, out, err)
    assert code == 2 and key in err, err


def test_overlong_profile_name_exits_2_not_oserror():
    code, out, err = _check(Path("x" * 5000 + ".toml"))
    _assert_clear(code, out, err)
    assert code == 2


@pytest.mark.parametrize("target", ["missing", "directory", "empty"])
def test_profile_path_that_is_not_a_profile_file(tmp_path, target):
    path = {"missing": tmp_path / "nope.toml", "directory": tmp_path, "empty": tmp_path / "empty.toml"}[target]
    if target == "empty":
        path.write_text("")
    code, out, err = _check(path)
    _assert_clear(code, out, err)
    assert code == 2


# ---- scripts -----------------------------------------------------------------------------------

def _no_crash(paths: RunPaths) -> None:
    log = paths.supervisor_log.read_text(errors="replace")
    assert "Traceback" not in log and "supervisor crashed" not in log, log[-3000:]


@pytest.mark.slow
def test_script_deleted_before_launch_fails_with_a_clear_message(runs_dir, tmp_path):
    script = tmp_path / "vanishing.py"
    script.write_text("print('hi')\n")
    prof = profile_from(f'[launch]\nmode = "single"\n[train]\nscript = "{script}"\n')
    script.unlink()
    paths = runs.start_run(prof, runs_dir)
    s = wait_done(paths, timeout=60)
    assert s.state is RunState.FAILED
    message = statuses(paths)[-1]["message"]
    assert "cannot launch" in message and "does not exist" in message and str(script.name) in message, message
    _no_crash(paths)
    assert_no_processes_of(runs_dir)


@pytest.mark.slow
def test_script_that_exits_1_at_once_fails_with_its_own_words(runs_dir):
    paths = runs.start_run(custom_profile("exit1.py", mode="single", grace=2), runs_dir)
    s = wait_done(paths, timeout=60)
    assert s.state is RunState.FAILED and s.returncode == 1
    exit_data = read_json(paths.exit_json)
    assert exit_data["failed_rank"] == 0
    assert "exit1.py: giving up before the first step" in statuses(paths)[-1]["message"]
    out = io.StringIO()
    assert follow(paths, out=out, interval_s=0.05) != 0
    assert "giving up before the first step" in out.getvalue()
    _no_crash(paths)
    assert_gone(recorded(paths))


@pytest.mark.slow
def test_script_that_prints_nothing_finishes_and_every_viewer_copes(runs_dir):
    paths = runs.start_run(custom_profile("silent.py", mode="single", grace=2), runs_dir)
    s = wait_done(paths, timeout=60)
    assert s.state is RunState.FINISHED and s.step is None and s.last_loss is None
    assert paths.id in runs.format_runs_table(runs.list_runs(runs_dir))
    out = io.StringIO()
    assert follow(paths, out=out, interval_s=0.05) == 0
    assert "finished" in out.getvalue()
    _no_crash(paths)
    assert_gone(recorded(paths))


@pytest.mark.slow
def test_binary_flood_and_endless_lines_on_stdout_neither_crash_nor_balloon_the_supervisor(runs_dir):
    megabytes = 48  # half of it one line with no newline
    prof = custom_profile("flood.py", mode="single", grace=2, args=[str(megabytes), "1"],
                            extra="[metrics]\ntrain = ['step (?P<step>\\d+) loss (?P<loss>[\\d.]+)']\n")
    paths = runs.start_run(prof, runs_dir)
    sup = None
    peak = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sup is None:
            ref = recorded(paths)
            sup = next((psutil.Process(r.pid) for r in ref if r.role == "supervisor"), None)
        try:
            if sup is not None:
                peak = max(peak, sup.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
        if not runs.run_summary(paths).live:
            break
        time.sleep(0.05)
    s = wait_done(paths, timeout=30)
    log_size = (paths.logs / "rank-0.log").stat().st_size
    assert log_size > megabytes << 20
    assert s.state is RunState.FAILED and s.returncode == 1, s
    # Memory stays bounded: far below the size of the flood.
    assert peak < 150 << 20, f"supervisor peak RSS {peak >> 20} MB for a {log_size >> 20} MB log"
    # The one real line after the junk still became a metric event.
    metrics = [e for e in events(paths, "metric") if e.get("source") == "log"]
    assert [(e["step"], e["values"]["loss"]) for e in metrics] == [(7, 0.25)], metrics[:5]
    # The error lines from binary stderr are stored as valid JSON and printed as plain text.
    exit_data = read_json(paths.exit_json)
    assert any("junk on stderr too" in line for line in exit_data["error"]), exit_data["error"]
    out = io.StringIO()
    assert follow(paths, out=out, interval_s=0.05) == 1
    printed = out.getvalue()
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", printed), repr(printed[:500])
    _no_crash(paths)
    assert_gone(recorded(paths))


# ---- events.jsonl with corrupt lines --------------------------------------------------------------

CORRUPT = [b"not json at all", b"\xff\xfe\x00\x01 invalid utf-8", b'{"v":1,"kind":"metric","step":', b"[1, 2, 3]",
           b'"a string"', b"{}", b"[" * 100000, b"{" * 50000, b"x" * (2 << 20), b'{"v":1,"kind":"metric","step":NaN}' b"}"]


def test_corrupt_events_lines_are_skipped_and_counted_by_every_reader(tmp_path):
    paths = create_run_dir(tmp_path / "runs", "corrupt")
    good = [make_event("status", state="running", message="go")]
    good += [make_event("metric", step=s, epoch=1, split="train", values={"loss": 1.0 / s}) for s in range(1, 6)]
    good += [make_event("epoch", epoch=1, epochs=1, step=5, seconds=1.0, samples_per_s=10.0),
             make_event("status", state="finished", message="finished", returncode=0)]
    # Junk before, between and after the events; the deeply nested lines (RecursionError bait) and
    # the 2 MB line sit inside the last 256 KB, the window run_summary reads.
    blob = CORRUPT[8] + b"\n" + encode(good[0]) + b"".join(c + b"\n" for c in CORRUPT[:6])
    blob += b"".join(encode(e) for e in good[1:5]) + CORRUPT[6] + b"\n" + encode(good[5]) + CORRUPT[7] + b"\n"
    blob += b"".join(encode(e) for e in good[6:]) + CORRUPT[9] + b"\n"
    paths.events.write_bytes(blob)
    paths.profile.write_text('name = "corrupt"\n')
    now = time.time()
    write_json_atomic(paths.run_json, {"id": paths.id, "profile": "corrupt", "mode": "single", "created": now,
                                       "state": "finished", "supervisor": {"pid": None, "create_time": None}})
    write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished", "failed_rank": None, "error": [],
                                        "hint": None, "message": "finished", "t": now, "seconds": 1.0})

    reader = EventReader(paths.events)
    seen = []
    while True:
        batch = reader.read()
        if not batch and reader.at_end:
            break
        seen += batch
    assert [e["kind"] for e in seen] == [e["kind"] for e in good]
    assert reader.skipped == len(CORRUPT)
    s = runs.run_summary(paths)  # reads the tail with its own parser
    assert (s.step, s.last_loss, s.state) == (5, 0.2, RunState.FINISHED)
    assert paths.id in runs.format_runs_table(runs.list_runs(tmp_path / "runs"))
    out = io.StringIO()
    assert follow(paths, out=out, interval_s=0.05) == 0
    assert "step 5" in out.getvalue() or "5 steps" in out.getvalue(), out.getvalue()

    # telemetry.jsonl gets the same treatment.
    from training.monitor.telemetry import read_telemetry

    sample = make_event("telemetry", source="cpu", host={}, workers=[])
    paths.telemetry.write_bytes(encode(sample) + b"".join(c + b"\n" for c in CORRUPT) + encode(sample))
    assert len(read_telemetry(paths.telemetry)) == 2
