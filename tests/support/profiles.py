"""Small profiles for tests that start real runs.

    custom_profile("spin.py", mode="single")    a script from tests/data/scripts
    spin_profile_file(tmp_path, grace=1)        spin.py's profile as a file, for run.py --profile
    builtin_profile("ddp", steps=30)            the built-in tiny task, sizes cut down
    cpu_profile(epochs=50)                      the shipped cpu profile, slowed so a test can act on it
    tiny_cpu_profile("launch.mode=single")      the shipped cpu profile, a few seconds end to end
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.locations import SCRIPTS
from training.profile import Profile, load_profile, parse_profile


def profile_from(body: str, name: str = "t") -> Profile:
    """A profile from TOML text; relative script paths resolve in tests/data/scripts."""
    return parse_profile(f'name = "{name}"\n' + body, path=str(SCRIPTS / f"{name}.toml"))


def _table(name: str, **values) -> str:
    """A TOML table from keyword arguments, in their order; a None value is left out."""
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)


def _launch_and_train(mode: str, nproc: int, grace: float, **train) -> str:
    """[launch] (2 gloo ranks under ddp) and [train] with `train` in it."""
    ranks = {"nproc_per_node": nproc, "backend": "gloo"} if mode == "ddp" else {}
    return _table("launch", mode=mode, **ranks, stop_grace_s=grace) + _table("train", **train)


TELEMETRY = _table("telemetry", interval_s=0.5)


def custom_profile(script: str, mode: str = "ddp", nproc: int = 2, args: list[str] | None = None,
                   grace: float = 3.0, name: str = "t", extra: str = "") -> Profile:
    """A user's script from tests/data/scripts, launched the way the profile says."""
    return profile_from(_launch_and_train(mode, nproc, grace, script=str(SCRIPTS / script), args=list(args or []))
                        + TELEMETRY + extra, name=name)


def spin_profile_file(directory: Path, grace: float) -> Path:
    """spin.toml in `directory`: tests/data/scripts/spin.py in single mode, for a test that starts
    it through `run.py --profile FILE`."""
    path = directory / "spin.toml"
    path.write_text('name = "spin"\n' + _launch_and_train("single", 1, grace, script=str(SCRIPTS / "spin.py"))
                    + TELEMETRY)
    return path


def builtin_profile(mode: str = "single", epochs: int = 1, steps: int = 0, samples: int = 4096, hidden: int = 16,
                    features: int = 32, log_every: int = 5, extra: str = "", name: str = "t",
                    grace: float = 3.0) -> Profile:
    """The built-in tiny task (an MLP on synthetic data), sized by the arguments."""
    return profile_from(_launch_and_train(mode, 2, grace, task="tiny", epochs=epochs, batch_size=16, lr=0.01,
                                          log_every=log_every, steps_per_epoch=steps or None)
                        + _table("task", samples=samples, features=features, hidden=hidden)
                        + TELEMETRY + extra, name=name)


def cpu_profile(epochs: int = 50, steps_per_epoch: int = 200, step_delay_s: float = 0.02,
                log_every: int = 5, overrides: list[str] | None = None) -> Profile:
    """The built-in `cpu` profile (ddp, 2 gloo ranks, tiny MLP) with tiny sizes and enough steps to
    act on it while it runs. The step delay is the worker's documented test knob: without it a
    step of the tiny model takes about a millisecond and the run is over before a request lands."""
    profile = load_profile("cpu", [f"train.epochs={epochs}", f"train.steps_per_epoch={steps_per_epoch}",
                                   f"train.log_every={log_every}", "train.batch_size=8", "task.samples=512",
                                   "task.features=8", "task.hidden=8", "telemetry.interval_s=0.5",
                                   "launch.stop_grace_s=2", *(overrides or [])])
    profile.launch.env = dict(profile.launch.env, OMP_NUM_THREADS="1",
                              TRAINDECK_TEST_STEP_DELAY_S=str(step_delay_s))
    return profile


def tiny_cpu_profile(*overrides: str) -> Profile:
    """The shipped cpu profile cut to 2 epochs of 4 steps: a whole real run in a few seconds."""
    return load_profile("cpu", ["train.epochs=2", "train.steps_per_epoch=4", "train.log_every=2",
                                "task.samples=256", "task.hidden=8", "telemetry.interval_s=0.5", *overrides])
