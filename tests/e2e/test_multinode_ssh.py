"""`[launch] hosts` end to end through a real sshd: the head starts the other node over SSH.

The test starts Debian's OpenSSH server on a loopback port with its own host key and one
authorized user key, all in tmp_path, listening on 127.0.0.1 and 127.0.0.2: two "hosts" of one
machine. The head is 127.0.0.1 (where run.py runs); 127.0.0.2 is reached only through ssh (the
test's client config, given by `[launch] ssh_options = ["-F", CONFIG]`) and writes to its own
remote_runs_dir. One gloo rank per node, both through torchrun's c10d rendezvous at the head.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.locations import ROOT
from tests.support.processes import assert_no_processes_of, kill_everything_of
from tests.support.waiting import wait_for
from traindeck.heartbeat import read_heartbeats
from training.rundir import RunPaths, list_run_dirs, read_json, read_run_json
from training.supervise.launch import free_port
from training.supervise.rdzv_watch import probe_endpoint

SSHD = Path("/usr/sbin/sshd")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ssh-keygen") is None or shutil.which("ssh") is None,
                       reason="needs the OpenSSH client (ssh, ssh-keygen)"),
]

SMALL = ["train.epochs=2", "train.steps_per_epoch=8", "train.log_every=4", "task.samples=256", "task.hidden=8",
         "task.features=8", "train.batch_size=8", "launch.nproc_per_node=1", "telemetry.interval_s=1.0"]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


@pytest.fixture
def sshd(tmp_path):
    """A private sshd on 127.0.0.1 and 127.0.0.2 (one port), and the ssh client config for it."""
    if not SSHD.exists():
        pytest.skip("needs OpenSSH's server at /usr/sbin/sshd (Debian: apt-get install openssh-server; .ci/run "
                    "installs it when it runs as root)")
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        Path("/run/sshd").mkdir(mode=0o755)  # OpenSSH's privilege-separation directory (root only)
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    _keygen(keys / "host_key")
    _keygen(keys / "user_key")
    shutil.copy(keys / "user_key.pub", keys / "authorized_keys")
    port = free_port()
    (keys / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1:{port}
ListenAddress 127.0.0.2:{port}
HostKey {keys / 'host_key'}
PidFile {keys / 'sshd.pid'}
AuthorizedKeysFile {keys / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
LogLevel ERROR
""")
    host_pub = (keys / "host_key.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.2]:{port} {host_pub[0]} {host_pub[1]}\n")
    (keys / "config").write_text(f"""
Host 127.0.0.2
  Port {port}
  User {getpass.getuser()}
  IdentityFile {keys / 'user_key'}
  IdentitiesOnly yes
  UserKnownHostsFile {keys / 'known_hosts'}
  StrictHostKeyChecking yes
""")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(keys / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(keys / "sshd.log", "wb"))
    try:
        wait_for(lambda: server.poll() is not None or not probe_endpoint("127.0.0.2", port), 20, "sshd listening")
        if server.poll() is not None:
            pytest.skip(f"sshd would not start here: {(keys / 'sshd.log').read_text()[-500:]}")
        yield keys / "config"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_hosts_run_starts_the_other_node_over_ssh_and_finishes(tmp_path, runs_dir, sshd, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    remote_runs = tmp_path / "remote-runs"
    # Two gloo ranks on each host: a world of 4 across the two nodes.
    small = [item for item in SMALL if not item.startswith("launch.nproc_per_node=")] + ["launch.nproc_per_node=2"]
    sets = [*small, 'launch.hosts=["127.0.0.1", "127.0.0.2"]', f'launch.ssh_options=["-F", "{sshd}"]',
            f'launch.remote_runs_dir="{remote_runs}"']
    check = subprocess.run([sys.executable, str(ROOT / "run.py"), "--check", "--profile", "cpu", "--runs-dir",
                            str(runs_dir), *[a for s in sets for a in ("--set", s)]],
                           capture_output=True, text=True, timeout=120)
    assert "[ok  ] node 127.0.0.2: reachable over SSH" in check.stdout, check.stdout + check.stderr
    assert "would run on 127.0.0.2: ssh -o BatchMode=yes" in check.stdout
    argv = [sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir", str(runs_dir)]
    try:
        head = subprocess.run(argv + [a for s in sets for a in ("--set", s)], capture_output=True, text=True,
                              timeout=240, stdin=subprocess.DEVNULL)
        (paths,) = list_run_dirs(runs_dir)
        assert head.returncode == 0, head.stdout[-3000:] + head.stderr[-2000:] + paths.supervisor_log.read_text()
        node = RunPaths(remote_runs / paths.id / "nodes" / "127.0.0.2")
        assert read_run_json(paths)["nodes"] == [{"host": "127.0.0.2", "run_dir": str(node.root)}]
        wait_for(lambda: node.exit_json.exists(), 60, "the other node's exit.json", paths=node)
        for p in (paths, node):
            assert (read_json(p.exit_json) or {}).get("state") == "finished", p.supervisor_log.read_text()[-2000:]
            rendezvous = read_run_json(p)["rendezvous"]
            assert rendezvous["state"] == "met" and rendezvous["joined"] == 2
        assert read_run_json(node)["id"] == paths.id and read_run_json(node)["node"] == {"head": "127.0.0.1"}
        # Every rank of the world trained, two on each host.
        assert set(read_heartbeats(paths.root)) == {0, 1} and set(read_heartbeats(node.root)) == {2, 3}
        assert read_run_json(paths)["world_size"] == 4
        started = [json.loads(line) for line in paths.events.read_text().splitlines() if '"node":' in line]
        assert started and started[0]["node"] == "127.0.0.2"
        # One run, one view: the other node's files copied into the head's run directory over the
        # follower's SSH connection, byte for byte, its end included, before the head's exit.json.
        copy = paths.node("127.0.0.2")
        assert copy.events.read_bytes() == node.events.read_bytes()
        assert copy.telemetry.read_bytes() == node.telemetry.read_bytes()
        assert set(read_heartbeats(copy.root)) == set(read_heartbeats(node.root))
        assert read_json(copy.exit_json) == read_json(node.exit_json)
        assert '"kind":"metric"' in paths.events.read_text().replace(" ", "")  # rank 0 reports wherever it is
        ranks_seen = {w.get("rank") for p in (paths, copy) for line in p.telemetry.read_text().splitlines()
                      for w in json.loads(line).get("workers") or []}
        assert ranks_seen == {0, 1, 2, 3}, "both hosts' telemetry in the head's run directory"
        assert "node 127.0.0.2 (ranks 2,3): finished" in head.stdout, head.stdout[-2000:]
        runs = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--runs"],
                              capture_output=True, text=True, timeout=60)
        assert "node 127.0.0.1 head (ranks 0,1)" in runs.stdout and "node 127.0.0.2 (ranks 2,3)" in runs.stdout, \
            runs.stdout
        assert_no_processes_of(paths.root)
        assert_no_processes_of(node.root)
    finally:
        kill_everything_of(remote_runs)


def test_a_node_ssh_cannot_reach_fails_the_run_naming_the_host(tmp_path, runs_dir):
    closed = free_port()  # nothing listens there: ssh's connection is refused at once
    sets = [*SMALL, 'launch.hosts=["127.0.0.1", "127.0.0.3"]', f'launch.ssh_options=["-p", "{closed}"]']
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir",
                           str(runs_dir), *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot start the nodes: starting the node on 127.0.0.3 over SSH failed: " in done.stdout
    assert "Connection refused" in done.stdout and "hint: check that `ssh -o BatchMode=yes HOST`" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    (paths,) = list_run_dirs(runs_dir)
    assert not (paths.logs / "launcher.log").exists()  # this node launched nothing either


def _slow_two_host_run(ssh_config: Path, remote_runs: Path) -> list[str]:
    """--set items: the cpu profile on both hosts, 50 epochs of slow steps (the worker's documented
    test knob, in launch.env so the other node gets it too), so it still trains when a test acts."""
    return [*SMALL, "train.epochs=50", 'launch.hosts=["127.0.0.1", "127.0.0.2"]',
            f'launch.ssh_options=["-F", "{ssh_config}"]', f'launch.remote_runs_dir="{remote_runs}"',
            'launch.env={TRAINDECK_TEST_STEP_DELAY_S = "0.05"}', "launch.stop_grace_s=3"]


def test_stop_from_a_new_session_stops_every_node(tmp_path, runs_dir, sshd, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    remote_runs = tmp_path / "remote-runs"
    sets = _slow_two_host_run(sshd, remote_runs)
    head = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir",
                             str(runs_dir), *[a for s in sets for a in ("--set", s)]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        paths = wait_for(lambda: (found := list_run_dirs(runs_dir)) and found[0], 30, "the head's run")
        node = RunPaths(remote_runs / paths.id / "nodes" / "127.0.0.2")
        wait_for(lambda: read_run_json(paths).get("state") == "running" and node.run_json.exists()
                 and read_run_json(node).get("state") == "running", 120, "both nodes running", paths=paths)
        # --dump from the head: every node's live ranks, the other node's over SSH, under its host.
        dump = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--dump", paths.id],
                              capture_output=True, text=True, timeout=90)
        assert dump.returncode == 0, dump.stdout + dump.stderr
        assert "node 127.0.0.1:" in dump.stdout and "node 127.0.0.2:" in dump.stdout, dump.stdout
        assert "no stack" not in dump.stdout and dump.stdout.count("stack dump of 1 rank:") == 2, dump.stdout
        assert "rank 0 (pid" in dump.stdout and "rank 1 (pid" in dump.stdout, dump.stdout
        stop = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--stop", paths.id],
                              capture_output=True, text=True, timeout=90, start_new_session=True)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert (read_json(paths.exit_json) or {}).get("state") == "stopped"
        wait_for(lambda: node.exit_json.exists(), 30, "the other node's exit.json", paths=node)
        # The other node ends stopped, or failed when its rendezvous partner went first: either
        # way it ended, and nothing of it is left.
        assert (read_json(node.exit_json) or {}).get("state") in ("stopped", "failed")
        assert_no_processes_of(paths.root)
        assert_no_processes_of(node.root)
        assert head.wait(timeout=30) is not None
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        kill_everything_of(remote_runs)


def test_a_node_whose_supervisor_is_killed_fails_the_run_everywhere_naming_it(tmp_path, runs_dir, sshd,
                                                                              monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    remote_runs = tmp_path / "remote-runs"
    sets = _slow_two_host_run(sshd, remote_runs)
    head = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir",
                             str(runs_dir), *[a for s in sets for a in ("--set", s)]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        paths = wait_for(lambda: (found := list_run_dirs(runs_dir)) and found[0], 30, "the head's run")
        node = RunPaths(remote_runs / paths.id / "nodes" / "127.0.0.2")
        # Training on both hosts, and the head has the other node's heartbeat (its rank) copied.
        wait_for(lambda: read_run_json(paths).get("state") == "running" and node.run_json.exists()
                 and read_run_json(node).get("state") == "running" and read_heartbeats(paths.node("127.0.0.2").root),
                 120, "both nodes running", paths=paths)
        (rank,) = read_heartbeats(node.root)
        os.kill(read_run_json(node)["supervisor"]["pid"], signal.SIGKILL)
        out, _ = head.communicate(timeout=120)
        assert head.returncode == 1, out[-3000:]
        exit_info = read_json(paths.exit_json) or {}
        assert exit_info.get("state") == "failed" and exit_info.get("failed_node") == "127.0.0.2", exit_info
        assert exit_info.get("failed_rank") == rank
        assert exit_info["message"].startswith(f"node 127.0.0.2 (rank {rank}) dropped out: its supervisor is gone")
        assert f"failed rank: {rank} on node 127.0.0.2" in out and "Traceback" not in out, out[-3000:]
        # The head stopped the node (taking over from its dead supervisor there), and copied its end.
        assert (read_json(node.exit_json) or {}).get("state") in ("stopped", "failed")
        assert read_json(paths.node("127.0.0.2").exit_json) == read_json(node.exit_json)
        assert_no_processes_of(paths.root)
        assert_no_processes_of(node.root)
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        kill_everything_of(remote_runs)
