"""The rehearsal's profile: the user's GPU profile scaled down to seconds of CPU work on this box
(ranks capped and on gloo, the task's tiny sizes, a few steps, fp16 off), with one note per change;
and the two phases it runs in. Pure: no files, no processes."""

from __future__ import annotations

import copy

from training.cpus import usable_cpus
from training.profile import Profile
from training.tasks import TASKS

# A tiny model's rank is mostly interpreter and gloo overhead: 4 per core still finishes in
# seconds, and covers every shipped profile (8 ranks) on a 2-core box.
AUTO_RANKS_PER_CORE = 4
MAX_BATCH = 8
REHEARSAL_SUFFIX = "-rehearsal"
FP16_NOTE = "fp16 is GPU-only: skipped in rehearsal"


def auto_rank_cap(cores: int | None) -> int:
    return AUTO_RANKS_PER_CORE * max(1, cores or 1)


def rehearsal_profile(profile: Profile, cores: int | None = None) -> tuple[Profile, list[str]]:
    """The profile as it runs in a rehearsal on a box with `cores` CPU cores, and what changed.

    Same task, mode, AMP (where the CPU has it), checkpoint/resume/export settings; tiny model and
    data; a few steps. Returns (profile, notes), one note per change the user should know about.
    """
    cores = usable_cpus() if cores is None else cores
    p = copy.deepcopy(profile)
    notes: list[str] = []
    base_name = profile.name or "profile"
    p.name = base_name if base_name.endswith(REHEARSAL_SUFFIX) else base_name + REHEARSAL_SUFFIX
    R, T, L = profile.rehearse, p.train, p.launch

    # ---- ranks -------------------------------------------------------------------------------
    _scale_launch(profile, L, R.nproc_cap or auto_rank_cap(cores), cores, notes)

    if profile.is_custom:
        what = T.script or f"-m {T.module}"
        notes.append(f"custom script {what} runs as-is with the same launch: its model, data and "
                     f"epochs cannot be scaled, so the rehearsal takes as long as the script does")
        return p, notes

    # ---- model and data ----------------------------------------------------------------------
    spec = TASKS[T.task]
    shrink = dict(R.task) if R.task else dict(spec.tiny)
    p.task = {**profile.task, **shrink}
    p.rehearse.task = {}
    source = "rehearse.task" if R.task else "the task's tiny sizes"
    changed = {k: v for k, v in shrink.items() if profile.task_options().get(k) != v}
    if changed:
        notes.append(f"task scaled down ({source}): " + ", ".join(f"{k}={v}" for k, v in changed.items()))

    # ---- schedule ----------------------------------------------------------------------------
    T.epochs = R.epochs
    T.steps_per_epoch = R.steps_per_epoch
    T.log_every = 1
    T.val_every = 1
    total_steps = R.epochs * R.steps_per_epoch
    if T.warmup_steps > total_steps // 2:
        # Keep warm-up and the decay after it both on the path, in a handful of steps.
        T.warmup_steps = max(1, total_steps // 2)
    batch = R.batch_size or min(profile.train.batch_size, MAX_BATCH)
    gpus = profile.hardware.gpus
    if L.mode == "dp" and gpus > 1 and batch % gpus:
        # DataParallel's global batch must still split over the GPUs the profile is written for.
        batch = max(gpus, batch - batch % gpus)
    T.batch_size = batch
    notes.append(f"{R.epochs} epochs x {R.steps_per_epoch} steps, batch {batch}"
                 f"{' per rank' if L.mode == 'ddp' else ''} (profile: {profile.train.epochs} epochs, "
                 f"batch {profile.train.batch_size})")

    # ---- precision ---------------------------------------------------------------------------
    if T.amp == "fp16":
        T.amp = "off"
        notes.append(FP16_NOTE)

    # ---- checkpoints -------------------------------------------------------------------------
    p.checkpoint.every_epochs = 1
    if p.checkpoint.resume:
        # Weights of the full-size model cannot load into the scaled one.
        notes.append(f"checkpoint.resume {p.checkpoint.resume} not loaded: the rehearsal model is scaled down")
        p.checkpoint.resume = ""
    return p, notes


def _scale_launch(profile: Profile, L, cap: int, cores: int | None, notes: list[str]) -> None:
    """The launch on this box: one node, at most `cap` ranks, on gloo, no GPU visible."""
    if L.mode == "ddp":
        if L.nnodes > 1:
            # One box plays one node; the others' ranks would only repeat this node's code path.
            notes.append(f"multi-node ({L.nnodes} nodes x {L.nproc_per_node}): rehearsing one node's "
                         f"{L.nproc_per_node} ranks on this box")
            L.nnodes, L.node_rank, L.rdzv_endpoint, L.rdzv_id, L.rdzv_backend = 1, 0, "", "", "auto"
        if L.nproc_per_node > cap:
            why = ("rehearse.nproc_cap" if profile.rehearse.nproc_cap
                   else f"{AUTO_RANKS_PER_CORE} per core x {cores} cores")
            notes.append(f"ranks capped: {L.nproc_per_node} -> {cap} ({why})")
            L.nproc_per_node = cap
        if L.backend != "gloo":
            notes.append(f"backend {L.backend} -> gloo: CPU processes talk over gloo")
            L.backend = "gloo"
    elif L.mode == "dp" and profile.hardware.gpus > 1:
        notes.append(f"dp over {profile.hardware.gpus} GPUs runs here as one process "
                     f"(the worker's no-GPU fallback is the path under test)")

    # A rehearsal is the CPU path by design: on a GPU box its processes must not see the GPUs
    # (a GPU run may be using them right now).
    if L.env.get("CUDA_VISIBLE_DEVICES", "") != "":
        notes.append(f"launch.env CUDA_VISIBLE_DEVICES={L.env['CUDA_VISIBLE_DEVICES']} -> \"\": "
                     f"a rehearsal runs on the CPU")
    L.env = {**L.env, "CUDA_VISIBLE_DEVICES": ""}


def phase_profiles(rp: Profile) -> tuple[Profile, Profile]:
    """(phase 1, phase 2): phase 1 stops one epoch early so phase 2 has something to resume.

    Only the last phase exports: the export is checked once, and a dynamo export costs ~10 s of CPU.
    """
    first = copy.deepcopy(rp)
    first.train.epochs = max(1, rp.train.epochs - 1)
    first.export.onnx = False
    return first, rp
