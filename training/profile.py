"""Profiles: the typed model of a `profiles/*.toml` file, its strict loader and its writer.

A profile describes one box and one workload. Loading validates everything before anything
starts and reports the first problem as a single `ProfileError` naming file, line and fix:

    profiles/cpu.toml:7: unknown key 'train.bach_size'. Did you mean 'train.batch_size'?

The dataclasses below are the schema: each field's type is what the TOML value must have,
and `field(metadata=...)` carries choices, bounds and the one-line help shown in errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from traindeck.untrusted import MAX_JSON_DEPTH, nests_at_most
from training import placeholders
from training.errors import TraindeckError
from training.monitor.metric_presets import PRESETS
from training.ssh_policy import ALLOWED, ssh_options_problem
from training.tasks import TASKS, TaskSpec
from training.tasks.base import OptionError

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
MODES = ("single", "dp", "ddp")


class ProfileError(TraindeckError):
    """A profile (or an override) is invalid. str() is the whole user-facing message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None,
                 column: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<profile>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


def _opt(default, help: str = "", choices: tuple | None = None, min: float | None = None,
         max: float | None = None, min_exclusive: bool = False):
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Hardware:
    gpus: int = _opt(0, "GPUs this profile is written for (0 = runs anywhere)", min=0)
    gpu_model: str = _opt("", "substring of the GPU name expected, e.g. 'B200' or '2080 Ti'")
    select: str = _opt("", "which GPUs of a shared box to take: \"free\" (no other process, little memory "
                       "used), \"all\" or indices such as \"0,1\"; empty = free when the box has more GPUs "
                       "than wanted or others hold some, else all")
    lock_dir: str = _opt("", "directory of the per-GPU locks every traindeck user of this box shares "
                         "(empty = $TRAINDECK_GPU_LOCK_DIR, else /tmp/traindeck-gpu-locks)")


@dataclass
class Launch:
    mode: str = _opt("ddp", "single, dp (nn.DataParallel) or ddp (torchrun)", choices=MODES)
    nproc_per_node: int = _opt(1, "processes per node in ddp mode (one per GPU)", min=1, max=1024)
    nnodes: int = _opt(1, "nodes in a multi-node ddp run (handed to torchrun's rendezvous)", min=1)
    node_rank: int = _opt(0, "this node's rank for static multi-node rendezvous", min=0)
    rdzv_backend: str = _opt("auto", "torchrun rendezvous backend: auto = static (no pickled state in a store "
                             "others can reach) on one node and for launch.hosts, c10d for nodes started by hand",
                             choices=("auto", "c10d", "static", "etcd", "etcd-v2"))
    rdzv_endpoint: str = _opt("", "host:port of the rendezvous; empty = this box, a free port is picked")
    rdzv_id: str = _opt("", "rendezvous job id shared by all nodes; empty = the run id on one node, and on several a "
                     "hash of the profile name, rdzv_endpoint, nnodes and nproc_per_node (the same on every node)")
    max_restarts: int = _opt(0, "torchrun --max-restarts", min=0)
    backend: str = _opt("auto", "process-group backend: auto (nccl on CUDA, gloo on CPU), nccl or gloo",
                        choices=("auto", "nccl", "gloo"))
    stop_grace_s: float = _opt(30.0, "seconds between SIGTERM and SIGKILL when a run is stopped", min=0)
    env: dict = _opt({}, "environment for the launcher and workers, e.g. NCCL_IB_DISABLE = \"1\"; values may "
                     "use {run_dir}, {checkpoints} and {run_id}")
    hosts: list = _opt([], "the nodes of a multi-node run, e.g. [\"gpu-a\", \"gpu-b\"]: the first is the head, where "
                       "run.py starts the run; the others are started over SSH; nnodes follows")
    hostfile: str = _opt("", "a file naming the nodes instead of hosts: one per line, # comments (relative to the "
                         "profile's directory)")
    ssh_options: list = _opt([], "extra options for ssh to the other hosts, e.g. [\"-F\", \"~/.ssh/cluster\"] "
                             "(BatchMode=yes is always on: keys or an agent, never a password)")
    remote_root: str = _opt("", "traindeck's directory on the other hosts (empty = the head's)")
    remote_python: str = _opt("", "the Python interpreter on the other hosts (empty = the head's)")
    remote_runs_dir: str = _opt("", "the runs directory on the other hosts (empty = the head's); each node "
                                "writes RUNS_DIR/<run id>/nodes/<host>/")


@dataclass
class Train:
    task: str = _opt("", "built-in workload: " + ", ".join(TASKS))
    script: str = _opt("", "your own training script (path relative to the profile's directory or cwd)")
    module: str = _opt("", "your own training module, run as python -m MODULE")
    cwd: str = _opt("", "directory your script or module runs in, relative to the profile file "
                    "(empty = the directory run.py was started from)")
    args: list = _opt([], "arguments passed to script/module, one list item per argument; "
                      "{run_dir}, {checkpoints} and {run_id} are filled in ({{ }} for literal braces)")
    epochs: int = _opt(3, "epochs to train", min=1)
    steps_per_epoch: int = _opt(0, "cap on optimizer steps per epoch (0 = the whole dataset)", min=0)
    batch_size: int = _opt(64, "per process in single/ddp, global (split over GPUs) in dp", min=1)
    lr: float = _opt(1e-3, "base learning rate", min=0, min_exclusive=True)
    lr_scaling: str = _opt("none", "scale lr by world size in ddp: none, linear or sqrt",
                           choices=("none", "linear", "sqrt"))
    optimizer: str = _opt("adamw", "adamw or sgd", choices=("adamw", "sgd"))
    weight_decay: float = _opt(0.0, "weight decay", min=0)
    warmup_steps: int = _opt(0, "linear lr warm-up steps", min=0)
    schedule: str = _opt("cosine", "lr schedule after warm-up: constant or cosine", choices=("constant", "cosine"))
    amp: str = _opt("off", "mixed precision: off, fp16 (GradScaler) or bf16", choices=("off", "fp16", "bf16"))
    grad_clip: float = _opt(0.0, "clip gradient norm to this value (0 = off)", min=0)
    grad_accum: int = _opt(1, "gradient accumulation steps", min=1)
    channels_last: bool = _opt(False, "use channels_last memory format for conv models")
    seed: int = _opt(0, "base seed; each rank seeds seed + rank", min=0)
    num_workers: int = _opt(-1, "DataLoader worker processes per rank, persistent for the run (-1 = auto: none "
                            "when training on the CPU, else up to 4 per rank in ddp and up to 8 in dp/single, "
                            "leaving a core per rank)", min=-1)
    log_every: int = _opt(10, "optimizer steps between metric events", min=1)
    val_every: int = _opt(1, "epochs between validation passes", min=1)


@dataclass
class Checkpoint:
    every_epochs: int = _opt(1, "write last.pt every N epochs (0 = only by steps)", min=0)
    every_steps: int = _opt(0, "also write last.pt every N optimizer steps (0 = off)", min=0)
    monitor: str = _opt("", "metric that picks best.pt, e.g. val_loss or val_f1 (empty = the task's)")
    monitor_mode: str = _opt("", "min or max (empty = the task's)", choices=("", "min", "max"))
    keep_last: int = _opt(2, "epoch-NNNN.pt files kept (0 = none written)", min=0)
    resume: str = _opt("", "start from this checkpoint file (weights, optimizer, step counter)")
    watch: str = _opt("", "custom scripts: glob of the checkpoint files the script writes, relative to the "
                      "directory it runs in, e.g. \"out/*.pt\" ({run_dir} and {checkpoints} work); every new "
                      "or rewritten file, once settled, becomes a checkpoint event")


@dataclass
class Export:
    onnx: bool = _opt(False, "export the trained model to ONNX at the end of the run")
    path: str = _opt("model.onnx", "file name of the export, inside the run directory")
    opset: int = _opt(17, "ONNX opset", min=7)


@dataclass
class Telemetry:
    interval_s: float = _opt(1.0, "seconds between GPU/CPU samples (at least 0.25: NVML averages "
                             "utilization over 1/6 s to 1 s)", min=0.25)


@dataclass
class Watchdog:
    hang_after_s: float = _opt(0.0, "warn when a rank's step has not advanced for this long "
                               "(0 = auto: 10x the median step time, at least 60 s)", min=0)
    straggler_ratio: float = _opt(1.5, "warn when a rank's steps are this much slower than the median", min=1)


# What a [health] rule does when it fires (training.monitor.health). "off" disables the rule.
HEALTH_ACTIONS = ("off", "warn", "pause", "save-stop", "stop")
# The nan rule of a built-in task may also rewind: reload last.pt, skip the batches since it, go on.
NAN_ACTIONS = HEALTH_ACTIONS + ("rewind",)


def _action(default: str, what: str):
    return _opt(default, f"{what}: off, warn, pause, save-stop or stop", choices=HEALTH_ACTIONS)


@dataclass
class Health:
    nan: str = _opt("stop", "a non-finite loss* or grad norm: off, warn, pause, save-stop, stop (built-in tasks "
                            "save-stop, keeping the last good checkpoint) or rewind (built-in tasks: reload the last "
                            "good checkpoint, skip the batches since it and go on)", choices=NAN_ACTIONS)
    rewind_max: int = _opt(3, "rewinds at most in one run; the next non-finite value save-stops", min=1)
    rewind_lr_factor: float = _opt(1.0, "each rewind multiplies the learning rate by this", min=0, max=1,
                                   min_exclusive=True)
    divergence: str = _action("warn", "the train-loss EMA above divergence_factor x its best so far, and large in "
                                      "absolute terms (divergence_floor, divergence_early_fraction)")
    divergence_factor: float = _opt(3.0, "how many times its best the train-loss EMA may reach", min=1,
                                    min_exclusive=True)
    divergence_early_fraction: float = _opt(0.5, "the EMA must also pass this fraction of the run's early loss (its "
                                                 "EMA when the warm-up ended): near zero a multiple of the best is "
                                                 "noise (0 = the ratio alone)", min=0)
    divergence_floor: float = _opt(0.0, "a train loss the EMA must also pass to be diverging; when above 0 it "
                                        "replaces divergence_early_fraction's bar", min=0)
    divergence_smoothing: float = _opt(0.9, "weight of the past in the train-loss EMA (0 = none)", min=0, max=0.999)
    divergence_warmup: int = _opt(10, "train-loss points before the divergence rule judges", min=1)
    overfit: str = _action("warn", "val loss rising for overfit_evals evaluations in a row while train loss falls "
                                   "(one incident until the val loss is back where its rise began)")
    overfit_evals: int = _opt(3, "evaluations in a row the val loss must rise", min=2)
    throughput: str = _action("warn", "samples/s below throughput_fraction of its running median for "
                                      "throughput_for_s")
    throughput_fraction: float = _opt(0.5, "fraction of the running median samples/s", min=0, max=1,
                                      min_exclusive=True)
    throughput_for_s: float = _opt(120.0, "seconds the throughput must stay low", min=0)
    input_bound: str = _action("warn", "the ranks waiting for their input batch (the step anatomy's data phase) "
                                       "above input_bound_share of their time for input_bound_for_s")
    input_bound_share: float = _opt(0.3, "share of a rank's wall time spent waiting for input that counts as "
                                         "input-bound (the median rank's)", min=0, max=1, min_exclusive=True)
    input_bound_for_s: float = _opt(60.0, "seconds the input wait must stay above input_bound_share", min=0)
    memory_creep: str = _action("warn", "a GPU's memory (its peak per epoch) rising at each of the last "
                                        "memory_creep_epochs epoch ends, by memory_creep_fraction in all")
    memory_creep_fraction: float = _opt(0.1, "growth of a GPU's per-epoch memory peak over those epochs, as a "
                                             "fraction of the first (0.1 = 10%)", min=0, min_exclusive=True)
    memory_creep_epochs: int = _opt(3, "epochs in a row the memory peak must rise (a worker's first epoch, the "
                                       "allocator's warm-up, is not judged)", min=1)
    throttle: str = _action("warn", "a GPU throttled by temperature or a hardware power/thermal slowdown in "
                                    "throttle_share of its samples over throttle_for_s")
    throttle_for_s: float = _opt(300.0, "seconds over which a GPU's throttling is judged", min=0, min_exclusive=True)
    throttle_share: float = _opt(0.8, "fraction of the samples in throttle_for_s that must be throttled", min=0,
                                 max=1, min_exclusive=True)
    throttle_power_cap: bool = _opt(False, "count the software power cap too (a GPU at its power limit, usual "
                                           "under full load) as throttling")
    stall: str = _action("warn", "no step for stall_after_s (the watchdog's hang check)")
    stall_after_s: float = _opt(0.0, "seconds without a step (0 = [watchdog] hang_after_s, whose 0 is auto: "
                                     "10x the median step time, at least 60 s)", min=0)
    straggler: str = _action("warn", "a rank slower than the others by [watchdog] straggler_ratio")
    incident_clear_s: float = _opt(600.0, "seconds a rule must stay healthy before its incident ends: firing again "
                                          "sooner updates the open incident (no new alarm, bell, notification or "
                                          "action); the nan rule's every firing is its own incident", min=0)


@dataclass
class Notify:
    command: list = _opt([], "argv run (no shell) for every health firing and when a run finishes or fails; "
                             "{rule}, {message}, {run_id} ... are filled in, the event is JSON on stdin")
    timeout_s: float = _opt(10.0, "seconds the command may take before it is killed", min=0, min_exclusive=True)
    min_interval_s: float = _opt(300.0, "a rule that keeps firing notifies at most once per this many seconds",
                                 min=0)
    on_end: bool = _opt(True, "notify when the run finishes or fails")


@dataclass
class Rehearse:
    nproc_cap: int = _opt(0, "most ranks to start on a CPU box (0 = auto from cores)", min=0)
    epochs: int = _opt(2, "epochs in the rehearsal", min=2)
    steps_per_epoch: int = _opt(3, "steps per epoch in the rehearsal", min=1)
    batch_size: int = _opt(0, "batch size in the rehearsal (0 = min(profile's, 8 per rank))", min=0)
    task: dict = _opt({}, "task options that replace the profile's during rehearsal (default: tiny sizes)")


@dataclass
class Profile:
    name: str = ""
    description: str = ""
    hardware: Hardware = field(default_factory=Hardware)
    launch: Launch = field(default_factory=Launch)
    train: Train = field(default_factory=Train)
    # Task options: validated against the task's declared defaults (training/tasks/__init__.py).
    task: dict = field(default_factory=dict)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    # Named regexes for custom scripts: split name (or "checkpoint") -> regex or list of regexes;
    # "preset" -> the names of framework presets (training.monitor.metric_presets).
    metrics: dict = field(default_factory=dict)
    export: Export = field(default_factory=Export)
    telemetry: Telemetry = field(default_factory=Telemetry)
    watchdog: Watchdog = field(default_factory=Watchdog)
    health: Health = field(default_factory=Health)
    notify: Notify = field(default_factory=Notify)
    rehearse: Rehearse = field(default_factory=Rehearse)
    # Where the profile came from (not a TOML key).
    source: str = ""

    # ---- derived views -------------------------------------------------------------------
    @property
    def is_custom(self) -> bool:
        return bool(self.train.script or self.train.module)

    @property
    def world_size(self) -> int:
        return self.launch.nproc_per_node * self.launch.nnodes if self.launch.mode == "ddp" else 1

    @property
    def monitor(self) -> tuple[str, str]:
        spec = TASKS.get(self.train.task)
        name = self.checkpoint.monitor or (spec.monitor if spec else "val_loss")
        mode = self.checkpoint.monitor_mode or (spec.monitor_mode if spec else "min")
        return name, mode

    def task_options(self) -> dict[str, Any]:
        """The task's defaults with the profile's [task] table applied."""
        spec = TASKS.get(self.train.task)
        return {**(spec.options if spec else {}), **self.task}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("source")
        return data

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def digest(self) -> str:
        """Hash of the resolved profile, stored in checkpoints to spot a changed config on resume."""
        return hashlib.sha256(self.to_toml().encode()).hexdigest()[:16]


SECTIONS = {f.name: f.type for f in dataclasses.fields(Profile)}
_TOP_LEVEL_SCALARS = ("name", "description")
_FREE_TABLES = ("task", "metrics")


# ---- loading -----------------------------------------------------------------------------

def _exists(path: Path) -> bool:
    """Path.exists() that says False for names the OS cannot even look up (too long: ENAMETOOLONG)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def find_profile(name_or_path: str, profiles_dir: Path | None = None) -> Path:
    """Resolve `cpu`, `cpu.toml` or a path to a profile file, or raise ProfileError."""
    profiles_dir = profiles_dir or PROFILES_DIR
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and _exists(candidate):
        return candidate
    named = profiles_dir / (name_or_path if name_or_path.endswith(".toml") else name_or_path + ".toml")
    if _exists(named):
        return named
    if _exists(candidate) and candidate.is_file():
        return candidate
    names = list_profile_names(profiles_dir)
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ProfileError(f"no profile named '{name_or_path}' (looked for {named}).{hint} "
                       f"Available: {', '.join(names) or 'none'}. Pass a name from profiles/ or a path to a .toml file.",
                       path=name_or_path)


def list_profile_names(profiles_dir: Path | None = None) -> list[str]:
    profiles_dir = profiles_dir or PROFILES_DIR
    return sorted(p.stem for p in profiles_dir.glob("*.toml"))


def load_profile(name_or_path: str | os.PathLike, overrides: list[str] | None = None,
                 profiles_dir: Path | None = None) -> Profile:
    path = find_profile(str(name_or_path), profiles_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read the profile: {exc}. Check the file exists and is UTF-8 text.",
                           path=path) from None
    return parse_profile(text, path=path, overrides=overrides)


_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def parse_profile(text: str, path: str | os.PathLike = "<profile>", overrides: list[str] | None = None,
                  default_name: str | None = None) -> Profile:
    """Parse and validate profile text. Raises ProfileError, never anything else."""
    path = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.search(msg)
        line = int(m.group(1)) if m else getattr(exc, "lineno", None)
        col = int(m.group(2)) if m else getattr(exc, "colno", None)
        msg = _TOML_POS.sub("", msg).strip()
        raise ProfileError(f"TOML syntax error: {msg}. Fix the line so it reads key = value "
                           f"(strings in quotes, lists in [ ]).", path=path, line=line, column=col) from None
    except Exception as exc:  # tomllib can raise other errors on pathological input
        raise ProfileError(f"cannot parse the profile: {exc}.", path=path) from None
    locator = _Locator(text)
    for item in overrides or []:
        _apply_override(raw, item)
    if default_name is None:
        default_name = Path(path).stem
    profile = _build(raw, path, locator)
    profile.name = profile.name or default_name
    profile.source = path
    _check_semantics(profile, raw, path, locator)
    return profile


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 0.0003). Values are TOML; bare words are strings."""
    if "=" not in item:
        raise ProfileError(f"override '{item}' must look like section.key=value, e.g. train.lr=3e-4.",
                           path="--set")
    key, _, value = item.partition("=")
    keys = [k.strip() for k in key.strip().split(".") if k.strip()]
    if not keys:
        raise ProfileError(f"override '{item}' has no key; use section.key=value.", path="--set")
    value = value.strip()
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
        # A value this deep breaks whoever walks it later (run.json's argv, profile.toml's writer).
        too_deep = not nests_at_most(parsed, MAX_JSON_DEPTH)
    except tomllib.TOMLDecodeError:
        parsed, too_deep = value, False  # bare words such as mode=dp are strings
    except RecursionError:  # tomllib recurses once per nested [ or {
        parsed, too_deep = None, True
    if too_deep:
        raise ProfileError(f"override '{key.strip()}=...': the value nests too deeply; give a number, a word, "
                           f"or a short list.", path="--set")
    return keys, parsed


def _apply_override(raw: dict, item: str) -> None:
    keys, value = parse_override(item)
    node = raw
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ProfileError(f"override '{item}': '{k}' is not a section.", path="--set")
        node = nxt
    node[keys[-1]] = value


class _Locator:
    """Finds the line of `[section] key` in the source text, for error messages."""

    _HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str):
        self.index: dict[tuple[str, str], int] = {}
        self.sections: dict[str, int] = {}
        section = ""
        for n, line in enumerate(text.splitlines(), start=1):
            h = self._HEADER.match(line)
            if h and not line.lstrip().startswith("[["):
                section = h.group(1).replace('"', "").replace("'", "").strip()
                self.sections.setdefault(section, n)
                continue
            k = self._KEY.match(line)
            if k:
                self.index.setdefault((section, k.group(1).strip("\"'")), n)

    def line(self, section: str, key: str | None = None) -> int | None:
        if key is None:
            return self.sections.get(section)
        return self.index.get((section, key)) or self.sections.get(section)


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list", dict: "a table"}.get(tp, str(tp))


def _check_value(value, tp, meta: dict, key: str, path: str, line: int | None):
    origin = get_origin(tp) or tp
    ok = False
    if origin is bool:
        ok = isinstance(value, bool)
    elif origin is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            if not math.isfinite(value):
                raise ProfileError(f"'{key}' is {value}; it must be a finite number.", path=path, line=line)
    elif origin is str:
        ok = isinstance(value, str)
    elif origin is list:
        ok = isinstance(value, list)
        if ok and not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise ProfileError(f"'{key}' must be a list of strings or numbers, e.g. [\"--epochs\", \"3\"].",
                               path=path, line=line)
        if ok:
            value = [str(v) for v in value]
    elif origin is dict:
        ok = isinstance(value, dict)
    if not ok:
        shown = repr(value) if not isinstance(value, dict) else "a table"
        fix = f" Write it as {_type_name(origin)}"
        if meta.get("choices"):
            fix += ", one of " + ", ".join(repr(c) for c in meta["choices"] if c)
        raise ProfileError(f"'{key}' must be {_type_name(origin)}, not {shown}.{fix}.", path=path, line=line)
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), [c for c in choices if c], n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ProfileError(f"'{key}' is '{value}', which is not one of "
                           f"{', '.join(repr(c) for c in choices if c)}.{hint}", path=path, line=line)
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("min_exclusive") and value == lo)):
        op = ">" if meta.get("min_exclusive") else ">="
        raise ProfileError(f"'{key}' is {value}; it must be {op} {lo} ({meta.get('help')}).", path=path, line=line)
    if hi is not None and value > hi:
        raise ProfileError(f"'{key}' is {value}; it must be <= {hi}.", path=path, line=line)
    return value


def _unknown(key: str, known: list[str], where: str, path: str, line: int | None) -> ProfileError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    full = f"{where}.{key}" if where else key
    hint = f" Did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else \
        f" Known keys{' in [' + where + ']' if where else ''}: {', '.join(known)}."
    return ProfileError(f"unknown key '{full}'.{hint}", path=path, line=line)


def _build(raw: dict, path: str, loc: _Locator) -> Profile:
    top_known = [name for name in SECTIONS if name != "source"]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_known:
            raise _unknown(key, top_known, "", path, loc.line("", key) or loc.line(key))
        if key in _TOP_LEVEL_SCALARS:
            kwargs[key] = _check_value(value, str, {}, key, path, loc.line("", key))
            continue
        if not isinstance(value, dict):
            raise ProfileError(f"'{key}' must be a table: write it as a [{key}] section.",
                               path=path, line=loc.line("", key))
        if key in _FREE_TABLES:
            kwargs[key] = dict(value)
            continue
        cls = SECTIONS[key]
        cls = get_type_hints(Profile)[key] if isinstance(cls, str) else cls
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        section_kwargs = {}
        for k, v in value.items():
            line = loc.line(key, k)
            if k not in fields:
                raise _unknown(k, list(fields), key, path, line)
            section_kwargs[k] = _check_value(v, hints[k], dict(fields[k].metadata), f"{key}.{k}", path, line)
        kwargs[key] = cls(**section_kwargs)
    return Profile(**kwargs)


def parse_select(text: str) -> str | tuple[int, ...]:
    """`[hardware] select`: "" (automatic), "free", "all" or "0,1" -> the mode or the NVML indices."""
    text = text.strip().lower()
    if text in ("", "free", "all"):
        return text
    try:
        indices = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"'{text}', which is not \"free\", \"all\" or a list of GPU indices such as \"0,1\"") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"'{text}'; list each GPU index once, none negative, e.g. \"0,1\"")
    return indices


def _check_semantics(p: Profile, raw: dict, path: str, loc: _Locator) -> None:
    """What one key's type and bounds cannot say: the keys together, files, regexes, the launch.
    The first problem raises, in this order."""
    _check_workload(p, path, loc)
    base = Path(path).parent if path and not path.startswith("<") else Path.cwd()
    _check_train_paths(p, base, path, loc)
    _check_launch(p, raw, base, path, loc)
    if p.checkpoint.resume and not _exists(Path(p.checkpoint.resume)):
        raise ProfileError(f"'checkpoint.resume' names '{p.checkpoint.resume}', which does not exist.",
                           path=path, line=loc.line("checkpoint", "resume"))
    _check_metrics(p, path, loc)
    _check_custom_or_builtin(p, path, loc)


def _check_workload(p: Profile, path: str, loc: _Locator) -> None:
    """Exactly one of task, script and module; a task that exists, with its declared options."""
    t = p.train
    sources = [n for n in ("task", "script", "module") if getattr(t, n)]
    if len(sources) != 1:
        what = "none of" if not sources else "more than one of"
        raise ProfileError(f"[train] sets {what} task, script and module; set exactly one "
                           f"(task = \"tiny\" for a built-in workload, or script = \"train.py\").",
                           path=path, line=loc.line("train"))
    if t.task:
        if t.task not in TASKS:
            close = difflib.get_close_matches(t.task, list(TASKS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ProfileError(f"'train.task' is '{t.task}', which is not a built-in task.{hint} "
                               f"Built-in tasks: {', '.join(TASKS)}.", path=path, line=loc.line("train", "task"))
        _check_task_options(p.task, TASKS[t.task], "task", path, loc)
        _check_task_options(p.rehearse.task, TASKS[t.task], "rehearse.task", path, loc)
    elif p.task:
        raise ProfileError("[task] options apply to built-in tasks only; a custom script takes its options "
                           "through train.args.", path=path, line=loc.line("task"))


def _check_task_options(table: dict, spec: TaskSpec, where: str, path: str, loc: _Locator) -> None:
    """Each key of a [task] table against the task's declared options (training/tasks/__init__.py)."""
    for key, value in table.items():
        line = loc.line(where, key)
        option = spec.option(key)
        if option is None:
            raise _unknown(key, list(spec.options), where, path, line)
        try:
            table[key] = option.check(value)
        except OptionError as exc:
            raise ProfileError(f"'{where}.{key}' {exc}", path=path, line=line) from None


def _check_train_paths(p: Profile, base: Path, path: str, loc: _Locator) -> None:
    """train.cwd, train.args' placeholders and train.script, resolved against the profile's directory."""
    t = p.train
    if t.cwd:
        if not p.is_custom:
            raise ProfileError("'train.cwd' applies to a custom script or module only; built-in tasks run in "
                               "traindeck's own directory. Remove it.", path=path, line=loc.line("train", "cwd"))
        run_cwd = base / Path(t.cwd).expanduser()
        if not run_cwd.is_dir():
            raise ProfileError(f"'train.cwd' is '{t.cwd}', which is not a directory (relative paths start at the "
                               f"profile's directory, {base}). Fix the path or remove it to run where "
                               f"run.py is started.", path=path, line=loc.line("train", "cwd"))
        t.cwd = str(run_cwd.resolve())
    for i, arg in enumerate(t.args):
        why = placeholders.problem(arg, placeholders.RUN_PLACEHOLDERS)
        if why:
            raise ProfileError(f"'train.args' item {i + 1} ({arg!r}) {why}.", path=path,
                               line=loc.line("train", "args"))
    if t.script:
        script = Path(t.script)
        if not script.is_absolute():
            candidates = [base / script, Path(t.cwd or Path.cwd()) / script]
            found = next((c for c in candidates if _exists(c)), None)
        else:
            found = script if _exists(script) else None
        if found is None:
            raise ProfileError(f"'train.script' names '{t.script}', which does not exist (looked relative to "
                               f"the profile's directory and the directory it runs in). Fix the path.",
                               path=path, line=loc.line("train", "script"))
        t.script = str(found.resolve())


def _check_launch(p: Profile, raw: dict, base: Path, path: str, loc: _Locator) -> None:
    """The nodes, processes, rendezvous, environment and GPUs of the launch, together."""
    t = p.train
    launch = p.launch
    _check_hosts(p, raw, base, path, loc)
    if launch.mode != "ddp" and (launch.nnodes > 1):
        raise ProfileError(f"'launch.nnodes' is {launch.nnodes} but mode is '{launch.mode}'; multi-node needs mode = \"ddp\".",
                           path=path, line=loc.line("launch", "nnodes"))
    if launch.mode != "ddp" and launch.nproc_per_node > 1:
        raise ProfileError(f"'launch.nproc_per_node' is {launch.nproc_per_node} but mode is '{launch.mode}', which runs one "
                           f"process. Use mode = \"ddp\" for several processes, or remove nproc_per_node.",
                           path=path, line=loc.line("launch", "nproc_per_node"))
    if launch.nnodes > 1 and not launch.rdzv_endpoint and not launch.hosts:
        raise ProfileError("multi-node runs (launch.nnodes > 1) need launch.rdzv_endpoint = \"HOST:PORT\" of node 0, "
                           "the same on every node.", path=path, line=loc.line("launch", "nnodes"))
    if launch.node_rank >= launch.nnodes:
        raise ProfileError(f"'launch.node_rank' is {launch.node_rank} but nnodes is {launch.nnodes}; node_rank must be "
                           f"below nnodes.", path=path, line=loc.line("launch", "node_rank"))
    for k, v in launch.env.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ProfileError(f"'launch.env.{k}' must be NAME = \"value\" (a valid variable name and a string).",
                               path=path, line=loc.line("launch.env", k) or loc.line("launch", "env"))
        launch.env[k] = str(v)
        why = placeholders.problem(launch.env[k], placeholders.RUN_PLACEHOLDERS)
        if why:
            raise ProfileError(f"'launch.env.{k}' ({launch.env[k]!r}) {why}.", path=path,
                               line=loc.line("launch.env", k) or loc.line("launch", "env"))
    try:
        parse_select(p.hardware.select)
    except ValueError as exc:
        raise ProfileError(f"'hardware.select' is {exc}.", path=path, line=loc.line("hardware", "select")) from None
    if launch.mode == "dp" and p.hardware.gpus > 1 and t.batch_size % p.hardware.gpus:
        raise ProfileError(f"'train.batch_size' is {t.batch_size}, which DataParallel cannot split evenly over "
                           f"hardware.gpus = {p.hardware.gpus}. Use a multiple of {p.hardware.gpus}, e.g. "
                           f"{(t.batch_size // p.hardware.gpus + 1) * p.hardware.gpus}.",
                           path=path, line=loc.line("train", "batch_size"))
    # nccl refuses two ranks on one GPU; gloo ranks may share one (the GPU check does that on a 1-GPU box).
    if launch.mode == "ddp" and p.hardware.gpus and launch.nproc_per_node > p.hardware.gpus \
            and launch.backend != "gloo":
        raise ProfileError(f"'launch.nproc_per_node' is {launch.nproc_per_node} but hardware.gpus is {p.hardware.gpus}; "
                           f"run at most one process per GPU (or set launch.backend = \"gloo\", whose ranks can "
                           f"share a GPU).", path=path, line=loc.line("launch", "nproc_per_node"))


def _check_metrics(p: Profile, path: str, loc: _Locator) -> None:
    """[metrics]: presets, and regexes that compile and name what they capture."""
    for split, patterns in p.metrics.items():
        pats = patterns if isinstance(patterns, list) else [patterns]
        line = loc.line("metrics", split)
        if split == "preset":
            p.metrics[split] = _check_presets(pats, path, line)
            continue
        if not pats or not all(isinstance(x, str) for x in pats):
            raise ProfileError(f"'metrics.{split}' must be a regex string or a list of them.", path=path, line=line)
        for pat in pats:
            try:
                rx = re.compile(pat)
            except re.error as exc:
                raise ProfileError(f"'metrics.{split}' has an invalid regex {pat!r}: {exc}. Use Python re syntax "
                                   f"with named groups like (?P<loss>[\\d.]+).", path=path, line=line) from None
            if not rx.groupindex:
                raise ProfileError(f"'metrics.{split}' regex {pat!r} has no named group; name what it captures, "
                                   f"e.g. (?P<loss>[\\d.]+).", path=path, line=line)
            if split == "checkpoint" and "path" not in rx.groupindex:
                raise ProfileError(f"'metrics.checkpoint' regex {pat!r} needs a (?P<path>...) group for the file "
                                   f"written.", path=path, line=line)
        p.metrics[split] = list(pats)


def _check_custom_or_builtin(p: Profile, path: str, loc: _Locator) -> None:
    """Keys that only a custom script, or only a built-in task, can use; notify's placeholders."""
    if p.checkpoint.watch:
        line = loc.line("checkpoint", "watch")
        if not p.is_custom:
            raise ProfileError("'checkpoint.watch' applies to a custom script or module only; built-in tasks "
                               "report their own checkpoints. Remove it.", path=path, line=line)
        why = placeholders.problem(p.checkpoint.watch, placeholders.RUN_PLACEHOLDERS)
        if why:
            raise ProfileError(f"'checkpoint.watch' ({p.checkpoint.watch!r}) {why}.", path=path, line=line)
    for i, item in enumerate(p.notify.command):
        line = loc.line("notify", "command")
        why = placeholders.problem(item, placeholders.NOTIFY_PLACEHOLDERS)
        if why:
            raise ProfileError(f"'notify.command' item {i + 1} ({item!r}) {why}.", path=path, line=line)
    if p.health.nan == "rewind" and p.is_custom:
        raise ProfileError("'health.nan' is \"rewind\", which only a built-in task can do (traindeck reloads its "
                           "checkpoint); for a custom script use \"stop\" or \"save-stop\" and resume from the "
                           "script's own checkpoint.", path=path, line=loc.line("health", "nan"))
    if p.export.onnx and p.is_custom:
        raise ProfileError("[export] onnx works for built-in tasks only; a custom script exports its own model.",
                           path=path, line=loc.line("export", "onnx"))


# A host as ssh takes it: [user@]name or address, never an option ("-oProxyCommand=...").
_HOST = re.compile(r"[A-Za-z0-9_.@\[\]:%][A-Za-z0-9_.@\[\]:%-]*")


def _read_hostfile(p: Profile, base: Path, path: str, line: int | None) -> list[str]:
    hostfile = base / Path(p.launch.hostfile).expanduser()
    try:
        text = hostfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"'launch.hostfile' names '{p.launch.hostfile}', which cannot be read ({exc}; relative "
                           f"paths start at the profile's directory, {base}). Fix the path, or list the nodes in "
                           f"launch.hosts.", path=path, line=line) from None
    hosts = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [h for h in hosts if h]


def _check_hosts(p: Profile, raw: dict, base: Path, path: str, loc: _Locator) -> None:
    """[launch] hosts / hostfile: the nodes, the first the head. The resolved profile keeps the
    list in `hosts` (a hostfile is read here, once, and cleared), and `nnodes` follows from it."""
    launch = p.launch
    line = loc.line("launch", "hosts")
    if launch.hostfile:
        line = loc.line("launch", "hostfile")
        if launch.hosts:
            raise ProfileError("[launch] sets both hosts and hostfile; keep one of them.", path=path, line=line)
        launch.hosts = _read_hostfile(p, base, path, line)
        launch.hostfile = ""
        if not launch.hosts:
            raise ProfileError("'launch.hostfile' names no host; write one host name per line.", path=path, line=line)
    why = ssh_options_problem(launch.ssh_options)
    if why:
        raise ProfileError(f"'launch.ssh_options': {why}. ssh gets only {ALLOWED}; anything else (a ProxyJump, "
                           f"a ProxyCommand) belongs in your own ~/.ssh/config for that host.",
                           path=path, line=loc.line("launch", "ssh_options"))
    if not launch.hosts:
        return
    for host in launch.hosts:
        if not _HOST.fullmatch(host):
            raise ProfileError(f"'launch.hosts' has {host!r}, which is not a host name or address (letters, digits, "
                               f"'.', '-', '_', user@ before it); e.g. hosts = [\"gpu-a\", \"gpu-b\"].",
                               path=path, line=line)
    if len(set(launch.hosts)) != len(launch.hosts):
        twice = next(h for h in launch.hosts if launch.hosts.count(h) > 1)
        raise ProfileError(f"'launch.hosts' names '{twice}' twice; list each node once (nproc_per_node sets the "
                           f"processes on each).", path=path, line=line)
    given = (raw.get("launch") or {}).get("nnodes")
    if given is not None and given != len(launch.hosts):
        raise ProfileError(f"'launch.nnodes' is {given} but launch.hosts names {len(launch.hosts)} node(s); nnodes "
                           f"follows from hosts, remove it.", path=path, line=loc.line("launch", "nnodes"))
    launch.nnodes = len(launch.hosts)
    if launch.nnodes > 1 and launch.rdzv_backend not in ("auto", "static", "c10d"):
        raise ProfileError(f"'launch.hosts' starts every node through torchrun's static rendezvous (the head knows "
                           f"each node's rank); rdzv_backend is '{launch.rdzv_backend}'. Remove launch.rdzv_backend.",
                           path=path, line=loc.line("launch", "rdzv_backend"))


def _check_presets(names: list, path: str, line: int | None) -> list[str]:
    known = ", ".join(f'"{n}"' for n in PRESETS)
    if not names or not all(isinstance(n, str) for n in names):
        raise ProfileError(f"'metrics.preset' must be a preset name or a list of them: {known}.", path=path, line=line)
    for name in names:
        if name not in PRESETS:
            close = difflib.get_close_matches(name, list(PRESETS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ProfileError(f"'metrics.preset' is '{name}', which is not a preset.{hint} Presets: {known} "
                               f"(regexes for anything else go beside it, one per split).", path=path, line=line)
    return list(names)


# ---- writing -----------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") \
            .replace("\r", "\\r") + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def dump_toml(data: dict[str, Any]) -> str:
    """Write a profile dict (scalars first, then one table per section) as TOML."""
    lines = []
    for k, v in data.items():
        if not isinstance(v, dict):
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append("")
            lines.append(f"[{_toml_key(k)}]")
            for kk, vv in v.items():
                lines.append(f"{_toml_key(kk)} = {_toml_value(vv)}")
    return "\n".join(lines).lstrip("\n") + "\n"
