"""The GPUs a run's CUDA will see: its CUDA_VISIBLE_DEVICES (the profile's, the user's or what the
launch sets) matched against NVML's devices, MIG included. NVML itself ignores CUDA_VISIBLE_DEVICES
and lists every GPU of the box, so the supervisor (which GPUs to sample) and preflight (does the box
fit the profile) both ask here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from training.monitor.gpu import get_backend, normalize_uuid
from training.profile import Profile
from training.supervise.launch import LaunchSpec, gpu_visibility_env


def gpu_backend(backend=None):
    if backend is not None:
        return backend
    return get_backend()


def cuda_visible_devices(profile: Profile, environ: Mapping[str, str] | None = None) -> str | None:
    """The CUDA_VISIBLE_DEVICES the run's processes will have: the profile's launch.env, else the
    inherited one, else what traindeck sets (gpus = 0: none); None = unset (every GPU)."""
    environ = os.environ if environ is None else environ
    env = {**environ, **profile.launch.env, **gpu_visibility_env(profile, environ)}
    return env.get("CUDA_VISIBLE_DEVICES")


@dataclass(frozen=True)
class VisibleGpus:
    """The GPUs a run's CUDA can use, as NVML describes them (NVML itself ignores
    CUDA_VISIBLE_DEVICES and sees every GPU of the box)."""

    devices: tuple  # training.monitor.gpu.GpuInfo of the whole GPUs CUDA will see, in CUDA's order
    mig_instances: int = 0  # MIG-<uuid> entries of CUDA_VISIBLE_DEVICES: one device each
    notes: tuple[str, ...] = ()
    # The GPUs that hold the named MIG instances, where NVML lists them (NVML samples whole GPUs):
    # None when an instance is one NVML does not list, so which GPU it lies on is unknown.
    mig_parents: tuple | None = ()

    @property
    def count(self) -> int:
        return len(self.devices) + self.mig_instances


def visible_gpus(devices, cuda_visible: str | None) -> VisibleGpus:
    """Which of NVML's `devices` CUDA will use under CUDA_VISIBLE_DEVICES = `cuda_visible`.

    CUDA's rules: a comma list of indices, GPU-<uuid> (a unique prefix is enough) or MIG-<uuid>;
    the first entry it cannot parse ends the list. A GPU in MIG mode is not usable as a whole
    GPU: CUDA sees its MIG instances, which must be named by their MIG-<uuid>.
    """
    notes: list[str] = []
    if cuda_visible is None:
        chosen = list(devices)
    else:
        chosen, mig_instances, parents = [], 0, []
        for token in (t.strip() for t in cuda_visible.split(",")):
            if not token:
                break
            found = None
            if token.isdigit():
                found = next((d for d in devices if d.index == int(token)), None)
            elif token.lower().startswith("mig-"):
                mig_instances += 1
                wanted = normalize_uuid(token)
                parent = next((d for d in devices if any(normalize_uuid(m) == wanted for m in d.mig_uuids)), None)
                if parents is not None and parent is None:
                    parents = None
                elif parents is not None and parent not in parents:
                    parents.append(parent)
                continue
            elif token.lower().startswith("gpu-"):
                wanted = normalize_uuid(token)
                matches = [d for d in devices if (normalize_uuid(d.uuid) or "").startswith(wanted)]
                found = matches[0] if len(matches) == 1 else None
            if found is None:
                notes.append(f"CUDA_VISIBLE_DEVICES entry '{token}' matches no GPU: CUDA ignores it and "
                             f"every entry after it")
                break
            if found in chosen:
                notes.append(f"CUDA_VISIBLE_DEVICES names GPU {found.index} twice")
                continue
            chosen.append(found)
        whole = [d for d in chosen if not d.mig]
        for d in chosen:
            if d.mig:
                notes.append(f"GPU {d.index} is in MIG mode: CUDA sees its MIG instances, not the GPU; "
                             f"name them in CUDA_VISIBLE_DEVICES as MIG-<uuid> (nvidia-smi -L)")
        return VisibleGpus(tuple(whole), mig_instances, tuple(notes), None if parents is None else tuple(parents))
    for d in chosen:
        if d.mig:
            notes.append(f"GPU {d.index} is in MIG mode: not counted as a GPU; name its MIG instances in "
                         f"CUDA_VISIBLE_DEVICES as MIG-<uuid> (nvidia-smi -L) to use them")
    return VisibleGpus(tuple(d for d in chosen if not d.mig), 0, tuple(notes))


def run_gpus(profile: Profile, backend=None, environ: Mapping[str, str] | None = None) -> VisibleGpus:
    """The GPUs this profile's run would see on this box."""
    backend = gpu_backend(backend)
    devices = backend.devices() if backend.available else []
    return visible_gpus(devices, cuda_visible_devices(profile, environ))


def run_gpu_indices(spec: LaunchSpec) -> list[int] | None:
    """NVML indices of the GPUs the run's processes can see (their CUDA_VISIBLE_DEVICES), so the
    panels show exactly those: a MIG instance shows as the GPU that holds it (NVML samples whole
    GPUs); None = all (also when a MIG instance is one NVML does not list)."""
    backend = get_backend()
    if not backend.available:
        return None
    visible = visible_gpus(backend.devices(), spec.environ().get("CUDA_VISIBLE_DEVICES"))
    if visible.mig_parents is None:
        return None
    return list(dict.fromkeys(d.index for d in (*visible.devices, *visible.mig_parents)))
