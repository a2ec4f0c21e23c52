"""Files from a run directory are data, not commands: hosts and ssh options are checked against
the profile schema again before any ssh (training.ssh_policy), and --control, --dump, --stop and
--resume refuse a run directory that is not yours (training.console.owned_run). A recording ssh
($TRAINDECK_SSH) shows no ssh ever ran; the marker a ProxyCommand would touch never appears."""

from __future__ import annotations

import os
import sys

import pytest

import run as run_py
from training.console.node_reach import control_run, dump_run
from training.console.owned_run import RunNotYours, check_owned_run
from training.errors import TraindeckError
from training.profile import Launch, ProfileError, parse_profile
from training.rundir import RunPaths, write_json_atomic
from training.ssh_policy import check_ssh_target, ssh_options_problem
from training.supervise.node_ssh import RemoteNode, node_ssh

NEIGHBOUR_UID = 54321
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root (CI runs as root)")


@pytest.fixture
def recording_ssh(tmp_path, monkeypatch):
    """An ssh that only writes down that it ran (and would obey nothing)."""
    calls = tmp_path / "ssh-calls"
    fake = tmp_path / "fake-ssh"
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(calls)!r}, 'a').write(repr(sys.argv) + '\\n')\n"
                    f"print('{{}}')\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TRAINDECK_SSH", str(fake))
    return calls


@pytest.mark.parametrize("options", [
    ["-oProxyCommand=touch MARKER"], ["-o", "ProxyCommand touch MARKER"], ["-o", "proxycommand=sh"],
    ["-oLocalCommand=id"], ["-o", "PermitLocalCommand=yes"], ["-o", "ProxyJump=evil"], ["-J", "evil"],
    ["-p", "-oProxyCommand=x"], ["-l", "-oProxyCommand=x"], ["-F"], ["-o"], ["-i", "-x"], ["-p", "22x"],
    ["-oPort=-1"], ["-o", "Match=exec id"], ["-L", "8000:localhost:80"], ["--", "x"], "-p 22", [7],
])
def test_an_ssh_option_that_is_not_on_the_list_is_refused(options):
    assert ssh_options_problem(options)


@pytest.mark.parametrize("options", [
    [], ["-F", "~/.ssh/cluster"], ["-p", "2222"], ["-p2222"], ["-i", "~/.ssh/id_ed25519", "-l", "alice"],
    ["-o", "StrictHostKeyChecking=accept-new", "-oUserKnownHostsFile=/tmp/kh", "-o", "ConnectTimeout 5"],
    ["-4", "-q", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=10"],
])
def test_the_usual_ssh_options_pass(options):
    assert ssh_options_problem(options) is None


def test_a_profile_with_a_proxycommand_is_refused_at_load_naming_file_line_and_fix():
    text = '[train]\ntask = "tiny"\n[launch]\nmode = "ddp"\nhosts = ["a", "b"]\nssh_options = ["-oProxyCommand=touch M"]\n'
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, path="runs/x/profile.toml")
    message = str(caught.value)
    assert message.startswith("runs/x/profile.toml:6: 'launch.ssh_options'") and "ProxyCommand" in message
    assert "~/.ssh/config" in message


def test_node_ssh_checks_host_and_options_again_whatever_built_them():
    launch = Launch()
    launch.ssh_options = ["-oProxyCommand=touch MARKER"]  # as if read from a file no loader checked
    node = RemoteNode("gpu-b", "/runs/r/nodes/gpu-b", "/runs", "/opt/traindeck", "python3")
    with pytest.raises(TraindeckError, match="ProxyCommand"):
        node_ssh(launch, node, "dump", node.run_dir)
    launch.ssh_options = []
    with pytest.raises(TraindeckError, match="not a host name"):
        node_ssh(launch, RemoteNode("-oProxyCommand=touch MARKER", "/r", "/runs", "/opt", "py"), "dump", "/r")
    assert node_ssh(launch, node, "dump", node.run_dir)[-2] == "gpu-b"


def handed_run(tmp_path, host="gpu-b", ssh_options="[]"):
    """A head's run directory as someone could hand it over: run.json names its nodes."""
    paths = RunPaths(tmp_path / "runs" / "20261124-183000-x")
    paths.heartbeats.mkdir(parents=True)
    paths.profile.write_text(f'[train]\ntask = "tiny"\n[launch]\nmode = "ddp"\nhosts = ["gpu-a", "gpu-b"]\n'
                             f'ssh_options = {ssh_options}\n')
    write_json_atomic(paths.run_json, {"id": paths.id, "state": "running", "head_host": "gpu-a",
                                       "supervisor": {"pid": 1, "create_time": 1.0},
                                       "nodes": [{"host": host, "run_dir": "/b/runs/x/nodes/gpu-b"}]})
    # Rank 0 lives on that node (its heartbeat in the head's copy): --control goes there.
    paths.node(host).heartbeats.mkdir(parents=True)
    write_json_atomic(paths.node(host).heartbeats / "rank-0.json", {"rank": 0, "pid": 1, "t": 1.0})
    return paths


@pytest.mark.parametrize("host, ssh_options", [
    ("-oProxyCommand=touch MARKER", "[]"),  # a host that is an option
    ("gpu-c", "[]"),  # a host the profile does not name
    ("gpu-b", '["-oProxyCommand=touch MARKER"]'),  # the profile.toml's own options
])
def test_dump_and_control_of_a_handed_run_directory_never_run_ssh_with_its_words(tmp_path, monkeypatch,
                                                                                  recording_ssh, host, ssh_options):
    monkeypatch.chdir(tmp_path)
    paths = handed_run(tmp_path, host, ssh_options)
    with pytest.raises(TraindeckError) as caught:
        control_run(paths, "pause", timeout_s=1)
    assert "nothing was" in str(caught.value).lower() or "cannot be read" in str(caught.value)
    lines_or_error: object
    try:
        lines_or_error = dump_run(paths)
    except TraindeckError as exc:
        lines_or_error = str(exc)
    assert not recording_ssh.exists(), recording_ssh.read_text()
    assert not (tmp_path / "MARKER").exists()
    assert lines_or_error


@root_only
def test_an_ssh_config_file_others_can_change_is_refused(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  ProxyCommand touch MARKER\n")
    config.chmod(0o600)
    check_ssh_target("gpu-b", ["-F", str(config)])  # yours, user-only: ssh may read it
    config.chmod(0o666)
    with pytest.raises(TraindeckError, match="can be changed by others"):
        check_ssh_target("gpu-b", ["-F", str(config)])
    config.chmod(0o600)
    os.chown(config, NEIGHBOUR_UID, NEIGHBOUR_UID)
    with pytest.raises(TraindeckError, match=f"belongs to uid {NEIGHBOUR_UID}"):
        check_ssh_target("gpu-b", [f"-F{config}"])


def a_run(tmp_path) -> RunPaths:
    paths = RunPaths(tmp_path / "runs" / "20261124-183000-cpu")
    paths.heartbeats.mkdir(parents=True)
    paths.profile.write_text('[train]\ntask = "tiny"\n')
    write_json_atomic(paths.run_json, {"id": paths.id, "state": "failed", "supervisor": {"pid": 1, "create_time": 1.0},
                                       "processes": [{"pid": os.getpid(), "create_time": 1.0, "role": "worker"}]})
    return paths


@root_only
@pytest.mark.parametrize("command", [["--stop"], ["--dump"], ["--control", None, "pause"], ["--resume"]])
def test_a_run_directory_of_another_user_is_refused_with_the_reason(tmp_path, capsys, command):
    paths = a_run(tmp_path)
    os.chown(paths.root, NEIGHBOUR_UID, NEIGHBOUR_UID)
    argv = [w if w is not None else str(paths.root) for w in command]
    if None not in command:
        argv.insert(1, str(paths.root))
    code = run_py.main(["--runs-dir", str(tmp_path / "runs"), *argv])
    err = capsys.readouterr().err
    assert code != 0
    assert f"uid {NEIGHBOUR_UID}" in err and "not to you" in err and "refused" in err, err
    assert "Traceback" not in err
    assert not paths.exit_json.exists() and not paths.control.exists() and not paths.dumps.exists()


def test_a_symlinked_run_directory_or_run_json_is_refused(tmp_path):
    paths = a_run(tmp_path)
    link = RunPaths(tmp_path / "runs" / "20261124-190000-cpu")
    link.root.symlink_to(paths.root)
    with pytest.raises(RunNotYours, match="symbolic link"):
        check_owned_run(link, "--stop")
    elsewhere = tmp_path / "elsewhere.json"
    paths.run_json.rename(elsewhere)
    paths.run_json.symlink_to(elsewhere)
    with pytest.raises(RunNotYours, match="its run.json .* is a symbolic link"):
        check_owned_run(paths, "--dump")


def test_your_own_run_directory_passes(tmp_path):
    check_owned_run(a_run(tmp_path), "--stop")


@root_only
def test_a_neighbours_forged_orphan_naming_your_process_is_not_reaped(tmp_path):
    """A runs directory others can write: a neighbour's run.json says 'running, supervisor dead' and
    lists one of your processes (pid and create_time are public in /proc). Every start's orphan
    reaper would kill it on their say-so; a run directory not yours is not reaped."""
    import subprocess

    import psutil

    from tests.support.fake_runs import make_run_dir
    from training.console.stop import reap_orphans

    yours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        forged = make_run_dir(tmp_path / "runs", "20261124-200000-forged", state="running",
                              supervisor={"pid": 999_999, "create_time": 1.0},
                              processes=[{"pid": yours.pid, "create_time": psutil.Process(yours.pid).create_time(),
                                          "role": "worker", "rank": 0}])
        for path in (forged.root, *forged.root.rglob("*")):
            os.lchown(path, NEIGHBOUR_UID, NEIGHBOUR_UID)
        assert reap_orphans(tmp_path / "runs", warn=pytest.fail) == []
        assert yours.poll() is None, "the reaper killed a process on a neighbour's word"
        assert not forged.exit_json.exists()
        # The control: the same run directory, yours, is reaped and the process it names killed.
        for path in (forged.root, *forged.root.rglob("*")):
            os.lchown(path, 0, 0)
        assert [p.root for p in reap_orphans(tmp_path / "runs", warn=pytest.fail)] == [forged.root]
        yours.wait(timeout=10)
    finally:
        if yours.poll() is None:
            yours.kill()
            yours.wait()
