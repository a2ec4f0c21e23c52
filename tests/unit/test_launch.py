"""training.supervise.launch: profile -> argv/env/cwd, without starting anything."""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.locations import SCRIPTS
from training.errors import TraindeckError
from training.profile import load_profile, parse_profile
from training.rundir import RunPaths
from training.supervise.launch import (
    IMPORT_DIR,
    PROJECT_ROOT,
    LaunchSpec,
    build_launch,
    expose_traindeck,
    format_command,
    free_port,
)

SCRIPT = SCRIPTS / "echo_argv.py"
RUN = RunPaths(Path("/tmp/runs/20260101-000000-x"))
NASTY = "; rm -rf /tmp/x; echo $HOME `id` | cat"


def profile(launch: str = "", train: str = 'task = "tiny"', extra: str = ""):
    return parse_profile(f"name = \"x\"\n[launch]\n{launch}\n[train]\n{train}\n{extra}")


def option(argv, flag):
    return argv[argv.index(flag) + 1]


def test_ddp_builtin_worker_through_torchrun():
    spec = build_launch(profile('mode = "ddp"\nnproc_per_node = 2'), RUN, 29517)
    argv = list(spec.argv)
    assert argv[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert option(argv, "--nproc-per-node") == "2" and option(argv, "--nnodes") == "1"
    # One node: torchrun's static rendezvous, where no pickled state passes through the store
    # (anyone on the box can reach its port), and no rank exchange through it either.
    assert option(argv, "--rdzv-backend") == "static" and option(argv, "--node-rank") == "0"
    assert spec.env["TORCH_ELASTIC_WORKER_IDENTICAL"] == "1"
    assert option(argv, "--rdzv-endpoint") == "127.0.0.1:29517"
    assert option(argv, "--rdzv-id") == RUN.id and option(argv, "--max-restarts") == "0"
    assert option(argv, "--log-dir") == str(RUN.logs / "torchrun") and option(argv, "--redirects") == "3"
    assert argv[-3:] == ["-m", "training.worker", str(RUN.root)]
    assert spec.uses_torchrun and spec.local_procs == 2 and spec.port == 29517 and spec.cwd == PROJECT_ROOT
    assert spec.launcher_log == RUN.logs / "launcher.log" and spec.stdout_log is None


def test_ddp_picks_a_free_port_when_none_given():
    spec = build_launch(profile('mode = "ddp"\nnproc_per_node = 2'), RUN)
    assert isinstance(spec.port, int) and option(list(spec.argv), "--rdzv-endpoint") == f"127.0.0.1:{spec.port}"


def test_multinode_uses_the_profiles_rendezvous():
    p = profile('mode = "ddp"\nnproc_per_node = 4\nnnodes = 2\nnode_rank = 1\nrdzv_backend = "static"\n'
                'rdzv_endpoint = "10.0.0.1:29400"\nrdzv_id = "job7"\nmax_restarts = 2')
    spec = build_launch(p, RUN, 12345)
    argv = list(spec.argv)
    assert option(argv, "--rdzv-endpoint") == "10.0.0.1:29400" and spec.port == 29400
    assert option(argv, "--nnodes") == "2" and option(argv, "--node-rank") == "1"
    assert option(argv, "--rdzv-id") == "job7" and option(argv, "--max-restarts") == "2"
    assert spec.rank_offset == 4


def test_nodes_started_by_hand_keep_c10d_and_are_told_what_it_exposes():
    from training.supervise.launch import dynamic_rendezvous_warning

    by_hand = profile('mode = "ddp"\nnproc_per_node = 2\nnnodes = 2\nrdzv_endpoint = "10.0.0.1:29400"')
    argv = list(build_launch(by_hand, RUN).argv)
    assert option(argv, "--rdzv-backend") == "c10d" and "--node-rank" not in argv  # c10d assigns node ranks
    warning = dynamic_rendezvous_warning(by_hand.launch)
    assert "10.0.0.1:29400" in warning and "run code as you" in warning and "firewall" in warning
    one_node = profile('mode = "ddp"\nnproc_per_node = 2')
    assert dynamic_rendezvous_warning(one_node.launch) == ""
    # A profile that asks for c10d on one node gets it, and the warning with it.
    asked = profile('mode = "ddp"\nnproc_per_node = 2\nrdzv_backend = "c10d"')
    assert option(list(build_launch(asked, RUN, 1).argv), "--rdzv-backend") == "c10d"
    assert dynamic_rendezvous_warning(asked.launch)


def test_custom_script_and_module_keep_args_as_single_items():
    spec = build_launch(profile('mode = "ddp"\nnproc_per_node = 2',
                                f'script = "{SCRIPT}"\nargs = ["--lr", "0.1", "{NASTY}"]'), RUN, 1)
    assert list(spec.argv[-4:]) == [str(SCRIPT), "--lr", "0.1", NASTY]
    spec = build_launch(profile('mode = "single"', 'module = "my.train"\nargs = ["a b"]'), RUN)
    assert list(spec.argv) == [sys.executable, "-m", "my.train", "a b"]


def test_single_and_dp_run_the_worker_directly_with_rank0_log():
    for mode in ("single", "dp"):
        spec = build_launch(profile(f'mode = "{mode}"'), RUN)
        assert list(spec.argv) == [sys.executable, "-m", "training.worker", str(RUN.root)]
        assert not spec.uses_torchrun and spec.local_procs == 1 and spec.port is None
        assert spec.stdout_log == RUN.logs / "rank-0.log"


def test_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("training.supervise.launch.usable_cpus", lambda: 8)
    p = profile('mode = "ddp"\nnproc_per_node = 2\nstop_grace_s = 4.5\n[launch.env]\nNCCL_IB_DISABLE = "1"')
    spec = build_launch(p, RUN, 1, base_env={"PYTHONPATH": "/opt/lib"})
    assert spec.env["NCCL_IB_DISABLE"] == "1"
    assert spec.env["OMP_NUM_THREADS"] == "4"  # 8 cores / 2 local processes
    assert spec.env["TRAINDECK_RUN_DIR"] == str(RUN.root) and spec.env["PYTHONUNBUFFERED"] == "1"
    assert spec.env["PYTHONPATH"].split(":") == [str(PROJECT_ROOT), "/opt/lib"]
    assert spec.env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "5"
    assert spec.environ({"HOME": "/h"})["HOME"] == "/h"
    # Set by the profile or by the user's environment: left alone.
    p2 = profile('mode = "ddp"\nnproc_per_node = 2\n[launch.env]\nOMP_NUM_THREADS = "3"')
    assert build_launch(p2, RUN, 1, base_env={}).env["OMP_NUM_THREADS"] == "3"
    assert "OMP_NUM_THREADS" not in build_launch(profile(), RUN, 1, base_env={"OMP_NUM_THREADS": "2"}).env


def test_format_command_round_trips_through_a_shell_parser():
    p = profile('mode = "ddp"\nnproc_per_node = 2',
                f'script = "{SCRIPT}"\nargs = ["{NASTY}"]')
    spec = build_launch(p, RUN, 29500)
    line = format_command(spec, with_env=False)
    assert line.startswith(f"(cd {PROJECT_ROOT} && ") and line.endswith(")")
    inner = line[len(f"(cd {PROJECT_ROOT} && "):-1]
    assert shlex.split(inner) == list(spec.argv)
    assert "TRAINDECK_RUN_DIR=" in format_command(spec)
    single = format_command(build_launch(profile('mode = "single"'), RUN))
    assert single.rstrip(")").endswith(f">{RUN.logs / 'rank-0.log'} 2>&1")


def test_spec_is_frozen_and_placeholder_paths_work():
    spec = build_launch(load_profile("cpu"), "RUN_DIR", 29500)
    assert isinstance(spec, LaunchSpec) and spec.argv[-1] == "RUN_DIR"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.argv = ()  # type: ignore[misc]


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_bad_endpoint_is_a_user_error():
    p = profile('mode = "ddp"\nnproc_per_node = 2\nnnodes = 2\nrdzv_endpoint = "node0:http"')
    with pytest.raises(TraindeckError, match="HOST:PORT"):
        build_launch(p, RUN, 1)


# ---- where a custom script runs, what it imports, placeholders ---------------------------

def custom(train_extra: str = "", launch: str = 'mode = "single"', extra: str = ""):
    return profile(launch, f'script = "{SCRIPT}"\n{train_extra}', extra)


def test_custom_script_runs_where_traindeck_was_started(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_launch(custom(), RUN).cwd == tmp_path
    # A run's recorded cwd wins (a resume from another directory); built-in tasks stay in traindeck's root.
    assert build_launch(custom(), RUN, cwd="/srv/project").cwd == Path("/srv/project")
    assert build_launch(profile('mode = "ddp"\nnproc_per_node = 2'), RUN, 1, cwd="/srv/project").cwd == PROJECT_ROOT
    line = format_command(build_launch(custom(), RUN), with_env=False)
    assert line.startswith(f"(cd {tmp_path} && ")


def test_custom_script_gets_only_the_traindeck_package_on_pythonpath():
    base = {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), "/opt/lib"])}
    spec = build_launch(custom(launch='mode = "ddp"\nnproc_per_node = 2'), RUN, 1, base_env=base)
    # traindeck's root (inherited from the supervisor) would shadow a user's `training` or `tui`.
    assert spec.env["PYTHONPATH"].split(os.pathsep) == [str(RUN.root / IMPORT_DIR), "/opt/lib"]
    assert spec.import_dir == RUN.root / IMPORT_DIR
    builtin = build_launch(profile('mode = "single"'), RUN, base_env=base)
    assert builtin.env["PYTHONPATH"].split(os.pathsep) == [str(PROJECT_ROOT), "/opt/lib"]
    assert builtin.import_dir is None


def test_expose_traindeck_puts_nothing_else_there_and_imports_without_training(tmp_path):
    spec = build_launch(custom(), RunPaths(tmp_path / "run"))
    expose_traindeck(spec)
    expose_traindeck(spec)  # again: a resume
    assert [p.name for p in spec.import_dir.iterdir()] == ["traindeck"]
    # A fresh interpreter that sees only that folder: traindeck.report imports, `training` never does.
    code = ("import sys, traindeck.report as r; r.log(1, loss=0.5); r.flush(); "
            "assert not [m for m in sys.modules if m == 'training' or m.startswith('training.')], sys.modules")
    env = {"PYTHONPATH": str(spec.import_dir), "TRAINDECK_RUN_DIR": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert '"loss":0.5' in (tmp_path / "events.jsonl").read_text()


def test_placeholders_in_args_and_env_become_the_runs_paths():
    p = custom('args = ["--out_dir={run_dir}/out", "{checkpoints}", "--tag", "{run_id}", "{{literal}}"]',
               extra='[launch.env]\nRUN_OUT = "{run_dir}/env"')
    spec = build_launch(p, RUN)
    assert list(spec.argv[-5:]) == [f"--out_dir={RUN.root}/out", str(RUN.root / "checkpoints"), "--tag", RUN.id,
                                    "{literal}"]
    assert spec.env["RUN_OUT"] == f"{RUN.root}/env"


def test_the_lightning_preset_makes_rich_draw_its_bar_live_unless_the_user_said_otherwise(tmp_path):
    script = f'script = "{SCRIPT}"'
    lightning = build_launch(profile("", script, '[metrics]\npreset = "lightning"'), RUN, base_env={})
    assert lightning.env["TTY_COMPATIBLE"] == "1"
    assert "TTY_COMPATIBLE" not in build_launch(profile("", script, '[metrics]\npreset = "keras"'), RUN,
                                                base_env={}).env
    theirs = build_launch(profile('env = { TTY_COMPATIBLE = "0" }', script, '[metrics]\npreset = "lightning"'),
                          RUN, base_env={})
    assert theirs.env["TTY_COMPATIBLE"] == "0"
    assert "TTY_COMPATIBLE" not in build_launch(profile("", script, '[metrics]\npreset = "lightning"'), RUN,
                                                base_env={"TTY_COMPATIBLE": "0"}).env
