"""The profile loader: every shipped profile loads; every bad profile gets its own message."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.locations import BAD_PROFILES, ROOT
from training.profile import (
    PROFILES_DIR,
    ProfileError,
    list_profile_names,
    load_profile,
    parse_override,
    parse_profile,
)

BAD = BAD_PROFILES
SHIPPED = ["8xb200-gnn", "4xb200-chess", "3xb200-video", "2xb200-rcl", "4x2080ti", "cpu"]


def test_the_six_profiles_ship():
    assert sorted(list_profile_names()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_round_trips(name):
    p = load_profile(name)
    assert p.name == name
    assert p.description, "every shipped profile says what it is for"
    again = parse_profile(p.to_toml(), path=f"{name}-resolved.toml")
    assert again.to_dict() == p.to_dict()
    assert again.digest() == p.digest()


def test_shipped_profiles_match_the_boxes():
    gnn = load_profile("8xb200-gnn")
    assert (gnn.launch.mode, gnn.world_size, gnn.train.batch_size, gnn.train.amp) == ("ddp", 8, 64, "bf16")
    assert gnn.train.grad_clip > 0 and gnn.train.lr_scaling == "linear" and gnn.export.onnx
    chess = load_profile("4xb200-chess")
    assert (chess.launch.mode, chess.train.batch_size, chess.train.lr, chess.hardware.gpus) == ("dp", 8192, 1e-3, 4)
    video = load_profile("3xb200-video")
    assert (video.launch.mode, video.world_size, video.train.batch_size) == ("ddp", 3, 128)
    assert video.task_options()["class_weights"] is True and video.monitor == ("val_f1", "max")
    rcl = load_profile("2xb200-rcl")
    assert (rcl.launch.mode, rcl.train.batch_size, rcl.task["arch"], rcl.task["encoding"]) == ("dp", 64, "unet", "blosum")
    assert rcl.train.amp != "off"
    ti = load_profile("4x2080ti")
    assert (ti.launch.mode, ti.world_size, ti.train.amp, ti.task["depth"]) == ("ddp", 4, "fp16", "resnet50")
    assert ti.launch.env == {"NCCL_IB_DISABLE": "1"}
    cpu = load_profile("cpu")
    assert (cpu.launch.mode, cpu.world_size, cpu.launch.backend, cpu.hardware.gpus) == ("ddp", 2, "gloo", 0)


def _expectation(path: Path) -> tuple[str, int]:
    text = path.read_text()
    expect = re.search(r"^# expect: (.*)$", text, re.M).group(1)
    line = int(re.search(r"^# line: (\d+)$", text, re.M).group(1))
    return expect, line


@pytest.mark.parametrize("path", sorted(BAD.glob("*.toml")), ids=lambda p: p.stem)
def test_bad_profile_gives_its_specific_message(path):
    expect, line = _expectation(path)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert expect in message
    assert message.startswith(f"{path}:{line}"), message
    assert "\n" not in message and "Traceback" not in message


def test_unknown_profile_name_suggests():
    with pytest.raises(ProfileError, match="Did you mean 'cpu'"):
        load_profile("cpuu")


def test_overrides_are_type_checked_like_the_file():
    p = load_profile("cpu", ["train.epochs=1", "launch.mode=single", "launch.nproc_per_node=1", "task.hidden=8"])
    assert (p.train.epochs, p.launch.mode, p.task["hidden"]) == (1, "single", 8)
    with pytest.raises(ProfileError, match="'train.epochs' must be an integer"):
        load_profile("cpu", ["train.epochs=two"])
    with pytest.raises(ProfileError, match="Did you mean 'train.epochs'"):
        load_profile("cpu", ["train.epoch=2"])
    with pytest.raises(ProfileError, match="section.key=value"):
        load_profile("cpu", ["train.epochs"])
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("train.args=['--x', 'a b']") == (["train", "args"], ["--x", "a b"])


def test_custom_script_resolves_relative_to_the_profile(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    prof = tmp_path / "mine.toml"
    prof.write_text('[train]\nscript = "train.py"\nargs = ["--lr", 0.1]\n[metrics]\ntrain = \'loss (?P<loss>[\\d.]+)\'\n')
    p = load_profile(prof)
    assert p.train.script == str((tmp_path / "train.py").resolve())
    assert p.train.args == ["--lr", "0.1"]
    assert p.metrics == {"train": ["loss (?P<loss>[\\d.]+)"]}
    assert p.is_custom


def test_train_cwd_is_relative_to_the_profile_and_finds_the_script(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "train.py").write_text("print('hi')\n")
    (tmp_path / "profiles").mkdir()
    prof = tmp_path / "profiles" / "mine.toml"
    prof.write_text('[train]\ncwd = "../project"\nscript = "src/train.py"\nargs = ["--out={run_dir}/x", "{{}}"]\n')
    monkeypatch.chdir(tmp_path / "profiles")
    p = load_profile(prof)
    assert p.train.cwd == str(project.resolve())
    assert p.train.script == str((project / "src" / "train.py").resolve())
    # Written into the run directory and read back there, the absolute cwd stays the same.
    again = parse_profile(p.to_toml(), path=tmp_path / "elsewhere" / "profile.toml")
    assert again.train.cwd == p.train.cwd and again.train.args == p.train.args


# Values the generator draws from: shaped like profiles, so it reaches deep into validation.
_scalars = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                     st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3))
_keys = st.sampled_from(["mode", "nproc_per_node", "task", "epochs", "batch_size", "lr", "script", "gpus",
                         "amp", "monitor", "interval_s", "env", "train", "args", "hidden", "x", "nnodes"])
_sections = st.sampled_from(["hardware", "launch", "train", "task", "checkpoint", "metrics", "export",
                             "telemetry", "watchdog", "rehearse", "bogus"])


def _toml_scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else ("-inf" if v == float("-inf") else repr(v)))
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_scalar(x) for x in v) + "]"
    return str(v)


@st.composite
def _profile_texts(draw):
    lines = []
    for section in draw(st.lists(_sections, max_size=5, unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(_keys, max_size=4, unique=True)):
            lines.append(f"{key} = {_toml_scalar(draw(_scalars))}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=20)))
    return "\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_profile_texts())
def test_no_generated_profile_raises_anything_but_profile_error(text):
    try:
        parse_profile(text, path="fuzz.toml")
    except ProfileError as exc:
        assert str(exc).startswith("fuzz.toml")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(text):
    try:
        parse_profile(text, path="fuzz.toml")
    except ProfileError:
        pass


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_list_shows_six_profiles_with_hardware_column():
    out = _cli("--list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["PROFILE", "MODE", "RANKS", "HARDWARE"]
    for name in SHIPPED:
        assert any(line.startswith(name + " ") for line in lines), name
    assert "NO 0/8 B200" in out.stdout  # this box has no GPU


def test_cli_check_explains_missing_gpus_and_fails(tmp_path):
    out = _cli("--check", "--profile", "8xb200-gnn", "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode != 0
    assert "8 wanted (B200), 0 found" in out.stdout
    assert "would run:" in out.stdout and "torch.distributed.run" in out.stdout
    assert "Traceback" not in out.stderr


def test_cli_check_passes_for_cpu(tmp_path):
    out = _cli("--check", "--profile", "cpu", "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "preflight passed" in out.stdout


def test_cli_check_shows_the_directory_a_custom_script_would_run_in(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "mine.toml").write_text('[launch]\nmode = "single"\n[train]\nscript = "train.py"\n'
                                        'args = ["--out", "{checkpoints}"]\n')
    out = _cli("--check", "--profile", "mine.toml", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    would_run = next(line for line in out.stdout.splitlines() if "would run:" in line)
    assert f"(cd {tmp_path} && " in would_run
    assert f"{tmp_path / 'train.py'} --out '{tmp_path / 'runs'}/<new>-mine/checkpoints'" in would_run


def test_cli_bad_profile_is_one_paragraph_and_exit_2(tmp_path):
    out = _cli("--check", "--profile", str(BAD / "misspelled_key.toml"))
    assert out.returncode == 2
    assert "Did you mean 'train.batch_size'" in out.stderr
    assert "Traceback" not in out.stderr


def test_profiles_dir_is_the_repo_one():
    assert PROFILES_DIR == ROOT / "profiles"
