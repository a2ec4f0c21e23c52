"""The [notify] command (training.monitor.notify): placeholders, stdin JSON, no shell, timeout,
once per min_interval_s per rule, the end of a run, run.py --notify-test."""

from __future__ import annotations

import json
import sys

import pytest

from training.monitor.notify import Notifier, run_command
from training.profile import ProfileError, parse_profile

SINK = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(9) + sys.stdin.read())"


def notify_profile(command, **keys):
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    return parse_profile(f'[train]\ntask = "tiny"\n[notify]\ncommand = {json.dumps(command)}\n{extra}\n')


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def read_sink(path):
    out = []
    for line in path.read_text().splitlines():
        args, note = line.split("\t", 1)
        out.append((args, json.loads(note)))
    return out


def health(rule, step, message="x"):
    return {"kind": "health", "rule": rule, "step": step, "value": "nan", "action": "warn", "message": message}


def test_each_rule_notifies_at_most_once_per_min_interval(tmp_path):
    sink = tmp_path / "sink.txt"
    p = notify_profile([sys.executable, "-c", SINK, str(sink), "{rule} {step} {run_id}"], min_interval_s=300)
    clock = Clock()
    n = Notifier(p.notify, run_id="r1", run_dir=str(tmp_path), clock=clock)
    assert n.health(health("nan", 10))
    assert not n.health(health("nan", 20))  # the same rule, 0 s later
    assert n.health(health("divergence", 20))  # another rule has its own clock
    clock.t = 299.0
    assert not n.health(health("nan", 30))
    clock.t = 301.0
    assert n.health(health("nan", 40))
    n.close()
    got = read_sink(sink)
    assert [a for a, _ in got] == ["nan 10 r1", "divergence 20 r1", "nan 40 r1"]
    assert got[0][1] == {**health("nan", 10), "run_id": "r1", "run_dir": str(tmp_path)}


def test_an_update_of_an_open_incident_never_notifies(tmp_path):
    sink = tmp_path / "sink.txt"
    p = notify_profile([sys.executable, "-c", SINK, str(sink), "{rule} {step}"], min_interval_s=0)
    n = Notifier(p.notify, run_id="r1", run_dir=str(tmp_path), clock=Clock())
    assert n.health(dict(health("divergence", 10), incident="divergence-1"))
    assert not n.health(dict(health("divergence", 20), incident="divergence-1", update=True, firings=2))
    assert n.health(dict(health("divergence", 30), incident="divergence-2"))  # a new incident
    n.close()
    assert [a for a, _ in read_sink(sink)] == ["divergence 10", "divergence 30"]


def test_the_end_of_a_run_notifies_when_it_finished_or_failed_only(tmp_path):
    sink = tmp_path / "sink.txt"
    p = notify_profile([sys.executable, "-c", SINK, str(sink), "{kind} {state}"])
    n = Notifier(p.notify, run_id="r1", run_dir=str(tmp_path))
    assert not n.end("stopped", "stopped on request")
    assert n.end("failed", "rank 1 exited 1", returncode=1)
    n.close()
    ((args, note),) = read_sink(sink)
    assert args == "end failed" and note["message"] == "rank 1 exited 1" and note["returncode"] == 1
    off = Notifier(notify_profile(["true"], on_end=False).notify, run_id="r1", run_dir="")
    assert not off.end("finished", "done")


def test_no_shell_a_timeout_and_failures_are_told_not_raised(tmp_path):
    # A message with shell syntax reaches the command as one literal argument.
    sink = tmp_path / "sink.txt"
    out = run_command([sys.executable, "-c", SINK, str(sink), "{message}"],
                      {"message": "$(touch pwned); `x` | y", "rule": "nan"}, timeout_s=10)
    assert out.ok and read_sink(sink)[0][0] == "$(touch pwned); `x` | y"
    assert not (tmp_path / "pwned").exists()
    slow = run_command([sys.executable, "-c", "import time; time.sleep(5)"], {}, timeout_s=0.3)
    assert slow.returncode is None and "0.3 s" in slow.error
    missing = run_command([str(tmp_path / "no-such-command")], {}, timeout_s=1)
    assert missing.returncode is None and "could not start" in missing.error
    failed = []
    n = Notifier(notify_profile([sys.executable, "-c", "import sys; sys.exit(4)"]).notify, run_id="r", run_dir="",
                 on_failure=failed.append)
    n.health(health("nan", 1))
    n.close()
    assert [o.returncode for o in failed] == [4] and "exited 4" in failed[0].error


def test_notify_placeholders_are_checked_when_the_profile_loads():
    with pytest.raises(ProfileError, match=r"notify.command' item 2 .*unknown placeholder \{nope\}"):
        notify_profile(["echo", "{nope}"])
    assert notify_profile(["echo", "{{literal}} {rule}"]).notify.command == ["echo", "{{literal}} {rule}"]


def test_run_py_notify_test_runs_the_command(tmp_path, capsys):
    import run

    sink = tmp_path / "sink.txt"
    profile = tmp_path / "n.toml"
    command = [sys.executable, "-c", SINK, str(sink), "{kind}:{rule}"]
    profile.write_text(f'[train]\ntask = "tiny"\n[notify]\ncommand = {json.dumps(command)}\n')
    assert run.main(["--notify-test", str(profile), "--runs-dir", str(tmp_path / "runs")]) == 0
    ((args, note),) = read_sink(sink)
    assert args == "test:test" and note["kind"] == "test" and "notify-test" in note["message"]
    assert "exited 0" in capsys.readouterr().out
    failing = tmp_path / "f.toml"
    failing.write_text(f'[train]\ntask = "tiny"\n[notify]\ncommand = {json.dumps([sys.executable, "-c", "raise SystemExit(3)"])}\n')
    assert run.main(["--notify-test", str(failing)]) == 1
    assert "exited 3" in capsys.readouterr().err
    bare = tmp_path / "b.toml"
    bare.write_text('[train]\ntask = "tiny"\n')
    assert run.main(["--notify-test", str(bare)]) != 0
    assert "no [notify] command" in capsys.readouterr().err
