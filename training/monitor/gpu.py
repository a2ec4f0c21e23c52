"""GPU telemetry through NVML: the only module in traindeck that imports `pynvml`.

Modelled on nvitop's api layer: lazy `nvmlInit` on first use, one handle per device reused for
the life of the backend, every field query wrapped so a field the device does not support
(NotSupported, NoPermission, a function this driver lacks ...) is None -- shown as N/A, never a
made-up 0 -- and frozen snapshot dataclasses for everything handed out.

No GPU is a normal state, not an exception: without the nvidia-ml-py package, without the
driver, or with zero devices, the backend is simply not `available` and `error` says why
("no NVIDIA driver/GPU found: ..."). Sampling never raises: a device that fails mid-run (GPU
lost, XID, reset required) yields a sample with `error` set while the others are still sampled.

Tests, the TUI snapshots and the supervisor subprocess can run against a fake module:
`GpuBackend(nvml=module)` takes any pynvml-like object, and `get_backend()` honours
$TRAINDECK_FAKE_NVML="module.path:factory" (or "path/to/file.py:factory").
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

FAKE_NVML_ENV = "TRAINDECK_FAKE_NVML"
# A stand-in NVML (tests, demos, snapshots) sets this attribute to True; telemetry from it says
# "source": "fake-nvml" and the console marks it as simulated, so it never passes for real GPUs.
FAKE_MARK = "TRAINDECK_FAKE"
NO_GPU = "no NVIDIA driver/GPU found"
MIB = 1 << 20

# NVML return codes (nvml.h; stable ABI, identical in every pynvml). Named here so the decision
# "field is N/A" vs "device is gone" does not depend on which constants a module happens to export.
_ERR_UNINITIALIZED = 1
_ERR_INVALID_ARGUMENT = 2
_ERR_NOT_SUPPORTED = 3
_ERR_NO_PERMISSION = 4
_ERR_NOT_FOUND = 6
_ERR_DRIVER_NOT_LOADED = 9
_ERR_LIBRARY_NOT_FOUND = 12
_ERR_FUNCTION_NOT_FOUND = 13
_ERR_GPU_IS_LOST = 15
_ERR_RESET_REQUIRED = 16
_ERR_LIB_RM_VERSION_MISMATCH = 18
_ERR_NO_DATA = 21
_ERR_NOT_READY = 27
_ERR_GPU_NOT_FOUND = 28

# The field simply is not there on this device/driver/user: N/A, nothing to report.
_NA_CODES = frozenset({_ERR_INVALID_ARGUMENT, _ERR_NOT_SUPPORTED, _ERR_NO_PERMISSION, _ERR_NOT_FOUND,
                       _ERR_FUNCTION_NOT_FOUND, _ERR_NO_DATA, _ERR_NOT_READY})
# The device (or the driver under it) is gone: stop querying it for this sample, report the error.
_FATAL_CODES = frozenset({_ERR_UNINITIALIZED, _ERR_DRIVER_NOT_LOADED, _ERR_GPU_IS_LOST, _ERR_RESET_REQUIRED,
                          _ERR_LIB_RM_VERSION_MISMATCH, _ERR_GPU_NOT_FOUND})

# nvmlClocksEventReason* / nvmlClocksThrottleReason* bits (same values under both names).
THROTTLE_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)

# NVML constants with the values from nvml.h, used when an injected module lacks them.
_NVML_TEMPERATURE_GPU = 0
_NVML_CLOCK_SM = 1
_NVML_PCIE_UTIL_TX_BYTES = 0
_NVML_PCIE_UTIL_RX_BYTES = 1

# nvmlDeviceGetPcieThroughput blocks ~20 ms per call while NVML counts bytes; two counters on
# eight GPUs would cost ~320 ms per sample, more than a 0.25 s interval. So PCIe is re-read at
# most this often per device and the last value is reported in between.
PCIE_REFRESH_S = 2.0


def normalize_bus_id(bus_id: str) -> str | None:
    """A PCI bus id in one spelling for both sides: NVML says "00000000:3B:00.0", torch's
    properties give domain/bus/device numbers. -> "0000:3b:00.0"; None when it is not one."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) != 3:
        return None
    try:
        domain, bus = int(parts[0], 16), int(parts[1], 16)
        device, _, function = parts[2].partition(".")
        return f"{domain:04x}:{bus:02x}:{int(device, 16):02x}.{int(function or '0', 16)}"
    except ValueError:
        return None


def normalize_uuid(uuid: str | None) -> str | None:
    """NVML says "GPU-3f1c..." (a MIG instance "MIG-3f1c..."), torch's device properties "3f1c..."
    (no prefix): compare without it. A UUID names one device whatever its prefix."""
    if not uuid:
        return None
    text = str(uuid).strip().lower()
    return text[4:] if text.startswith(("gpu-", "mig-")) else text


def decode_throttle_reasons(mask: int) -> tuple[str, ...]:
    """Readable names for a clocks-event (throttle) bitmask; unknown bits as 'bit_0x...'."""
    names = [name for bit, name in THROTTLE_REASONS if mask & bit]
    known = 0
    for bit, _ in THROTTLE_REASONS:
        known |= bit
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"bit_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)


class GpuProcess(NamedTuple):
    pid: int
    used_mib: int | None  # None: NVML does not report it (WDDM, MIG without permission ...)


class GpuHolder(NamedTuple):
    """A process that holds memory on a GPU (for the leak check after a run)."""

    pid: int
    index: int
    used_mib: int | None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str | None
    memory_total_mib: int | None
    compute_capability: tuple[int, int] | None = None  # (8, 0) = sm_80
    pci_bus_id: str | None = None  # canonical "0000:3b:00.0" (normalize_bus_id)
    mig: bool = False  # MIG mode is on: CUDA sees its MIG instances, not the whole GPU
    mig_uuids: tuple[str, ...] = ()  # its MIG instances' "MIG-..." UUIDs, as CUDA_VISIBLE_DEVICES names them


@dataclass(frozen=True)
class GpuSample:
    """One device at one instant. Every measured field is None when N/A."""

    index: int
    name: str
    util: int | None = None  # % of the last sample period (1/6 s to 1 s) a kernel ran
    mem_util: int | None = None  # % of time device memory was read or written
    mem_used_mib: int | None = None
    mem_total_mib: int | None = None
    temp_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    fan_pct: int | None = None
    throttle: tuple[str, ...] | None = None  # () = not throttled; None = N/A
    pcie_rx_kbs: int | None = None
    pcie_tx_kbs: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    error: str | None = None  # the whole device failed this sample
    uuid: str | None = None  # "GPU-..." as NVML says it; ranks are matched to devices by it

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["throttle"] = None if self.throttle is None else list(self.throttle)
        data["processes"] = [{"pid": p.pid, "mem_mib": p.used_mib} for p in self.processes]
        return data


class _DeviceFailed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _text(value: Any) -> str:
    # Older pynvml returned bytes for strings; nvidia-ml-py >= 11.5 returns str.
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _init_failure_reason(exc: BaseException, code: int | None) -> str:
    if code == _ERR_LIBRARY_NOT_FOUND:
        return "the NVML library (libnvidia-ml.so.1) is not installed -- no NVIDIA driver on this machine"
    if code == _ERR_DRIVER_NOT_LOADED:
        return "the NVIDIA driver is not loaded (is this machine's GPU driver installed and running?)"
    if code == _ERR_NO_PERMISSION:
        return "no permission to use the NVIDIA devices"
    if code == _ERR_LIB_RM_VERSION_MISMATCH:
        return "the NVML library does not match the loaded kernel driver (reboot after a driver update?)"
    return f"nvmlInit failed: {exc}"


class _Device:
    """A device handle plus what does not change while it exists (cached on first success)."""

    def __init__(self, index: int, handle: Any):
        self.index = index
        self.handle = handle
        self.name: str | None = None
        self.uuid: str | None = None
        self.sm_clock_max_mhz: int | None = None
        self.compute_capability: tuple[int, int] | None = None
        self.pci_bus_id: str | None = None
        self.mig = False
        self.mig_uuids: tuple[str, ...] = ()
        self.pcie: tuple[int | None, int | None] = (None, None)
        self.pcie_read_at: float | None = None


class GpuBackend:
    """NVML behind a lock. Construct freely: nothing touches the driver before the first query."""

    def __init__(self, nvml: Any = None, pcie_refresh_s: float = PCIE_REFRESH_S):
        self._nvml_given = nvml
        self._nvml: Any = None
        self._lock = threading.RLock()
        self._initialized = False
        self._init_done = False  # tried (successfully or not)
        self._error: str | None = None
        self._devices: list[_Device] = []
        self._driver_version: str | None = None
        self._pcie_refresh_s = pcie_refresh_s
        # Which of the newer/older functions this driver has, found on first use.
        self._throttle_fn: str | None = None
        self._temp_fn: str | None = None

    # ---------------------------------------------------------------- lifecycle

    def _ensure_init(self) -> None:
        if self._init_done:
            return
        with self._lock:
            if self._init_done:
                return
            self._init_done = True
            nvml = self._nvml_given
            if nvml is None:
                try:
                    import pynvml as nvml  # the one import of pynvml in traindeck
                except ImportError as exc:
                    self._error = f"{NO_GPU}: the nvidia-ml-py package is not installed ({exc})"
                    return
            self._nvml = nvml
            try:
                nvml.nvmlInit()
            except Exception as exc:  # NVMLError subclasses, or OSError from a broken library
                self._error = f"{NO_GPU}: {_init_failure_reason(exc, getattr(exc, 'value', None))}"
                return
            self._initialized = True
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except Exception as exc:
                self._error = f"{NO_GPU}: NVML could not count devices ({exc})"
                return
            if count == 0:
                # nvitop's "No visible devices found"; NVML ignores CUDA_VISIBLE_DEVICES.
                self._error = f"{NO_GPU}: the driver is loaded but reports no devices"
                return
            for index in range(count):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                except Exception:
                    handle = None  # retried at the next sample; the device samples as an error
                self._devices.append(_Device(index, handle))
            for dev in self._devices:
                if dev.handle is not None:
                    self._load_static(dev)

    def shutdown(self) -> None:
        """Release NVML. The next query initializes again."""
        with self._lock:
            if self._initialized:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
            self._initialized = False
            self._init_done = False
            self._error = None
            self._devices = []
            self._driver_version = None

    # ---------------------------------------------------------------- state

    @property
    def available(self) -> bool:
        self._ensure_init()
        return self._initialized and bool(self._devices)

    @property
    def source(self) -> str:
        """"nvml" for the real library, "fake-nvml" for a stand-in (FAKE_MARK)."""
        nvml = self._nvml_given
        return "fake-nvml" if nvml is not None and getattr(nvml, FAKE_MARK, False) is True else "nvml"

    @property
    def error(self) -> str | None:
        """Why there are no GPUs to show, as one user-facing sentence; None when available."""
        self._ensure_init()
        return self._error

    def device_count(self) -> int:
        self._ensure_init()
        return len(self._devices) if self._initialized else 0

    def devices(self) -> list[GpuInfo]:
        self._ensure_init()
        with self._lock:
            out = []
            for dev in self._devices:
                total = None
                if self._ensure_handle(dev):
                    mem = self._na(self._nvml.nvmlDeviceGetMemoryInfo, dev.handle)
                    total = None if mem is None else int(mem.total) // MIB
                out.append(GpuInfo(dev.index, dev.name or f"GPU {dev.index}", dev.uuid, total,
                                   dev.compute_capability, dev.pci_bus_id, dev.mig, dev.mig_uuids))
            return out

    def driver_version(self) -> str | None:
        self._ensure_init()
        if not self._initialized:
            return None
        with self._lock:
            if self._driver_version is None:
                value = self._na(self._nvml.nvmlSystemGetDriverVersion)
                self._driver_version = None if value is None else _text(value)
            return self._driver_version

    def cuda_driver_version(self) -> tuple[int, int] | None:
        """The newest CUDA this driver supports, (12, 8) (nvmlSystemGetCudaDriverVersion: 12080);
        a torch wheel built for a newer CUDA cannot use the GPUs. None where NVML cannot tell."""
        self._ensure_init()
        if not self._initialized:
            return None
        with self._lock:
            value = self._na(getattr(self._nvml, "nvmlSystemGetCudaDriverVersion", None))
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return None
        return value // 1000, (value % 1000) // 10

    # ---------------------------------------------------------------- sampling

    def sample(self) -> list[GpuSample]:
        """One snapshot of every device. Never raises; [] when not available."""
        if not self.available:
            return []
        with self._lock:
            return [self._sample_device(dev) for dev in self._devices]

    def processes_of(self, pids) -> list[GpuHolder]:
        """Which of these pids hold memory on which GPU (compute and graphics contexts)."""
        wanted = set(int(p) for p in pids)
        if not wanted or not self.available:
            return []
        out: list[GpuHolder] = []
        with self._lock:
            for dev in self._devices:
                if not self._ensure_handle(dev):
                    continue
                try:
                    procs = self._processes(dev)
                except _DeviceFailed:
                    continue
                out.extend(GpuHolder(p.pid, dev.index, p.used_mib) for p in procs if p.pid in wanted)
        return out

    def holders_by_uuid(self) -> dict[str, list[GpuHolder]]:
        """Every process NVML lists on every GPU, keyed by the GPU's normalized UUID (the leak
        check's view when PIDs cannot be trusted: inside a container NVML reports host PIDs)."""
        if not self.available:
            return {}
        out: dict[str, list[GpuHolder]] = {}
        with self._lock:
            for dev in self._devices:
                uuid = normalize_uuid(dev.uuid)
                if not uuid or not self._ensure_handle(dev):
                    continue
                try:
                    procs = self._processes(dev)
                except _DeviceFailed:
                    continue
                out[uuid] = [GpuHolder(p.pid, dev.index, p.used_mib) for p in procs]
        return out

    # ---------------------------------------------------------------- internals

    def _ensure_handle(self, dev: _Device) -> bool:
        if dev.handle is None:
            try:
                dev.handle = self._nvml.nvmlDeviceGetHandleByIndex(dev.index)
            except Exception:
                return False
            self._load_static(dev)
        return True

    def _load_static(self, dev: _Device) -> None:
        nvml = self._nvml
        name = self._na(nvml.nvmlDeviceGetName, dev.handle)
        dev.name = None if name is None else _text(name)
        uuid = self._na(nvml.nvmlDeviceGetUUID, dev.handle)
        dev.uuid = None if uuid is None else _text(uuid)
        dev.sm_clock_max_mhz = self._na(nvml.nvmlDeviceGetMaxClockInfo, dev.handle,
                                        getattr(nvml, "NVML_CLOCK_SM", _NVML_CLOCK_SM))
        capability = self._na(getattr(nvml, "nvmlDeviceGetCudaComputeCapability", None), dev.handle)
        dev.compute_capability = None if not capability else (int(capability[0]), int(capability[1]))
        pci = self._na(getattr(nvml, "nvmlDeviceGetPciInfo", None), dev.handle)
        dev.pci_bus_id = normalize_bus_id(_text(getattr(pci, "busId", ""))) if pci is not None else None
        mig = self._na(getattr(nvml, "nvmlDeviceGetMigMode", None), dev.handle)  # (current, pending)
        dev.mig = bool(mig and int(mig[0]) == 1)
        dev.mig_uuids = self._mig_uuids(dev) if dev.mig else ()

    def _mig_uuids(self, dev: _Device) -> tuple[str, ...]:
        """The UUIDs of a MIG-mode GPU's instances: the slots up to the maximum that hold one (an
        empty slot answers NotFound)."""
        nvml = self._nvml
        slots = self._na(getattr(nvml, "nvmlDeviceGetMaxMigDeviceCount", None), dev.handle)
        by_index = getattr(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", None)
        out = []
        for slot in range(int(slots or 0) if by_index is not None else 0):
            handle = self._na(by_index, dev.handle, slot)
            uuid = None if handle is None else self._na(nvml.nvmlDeviceGetUUID, handle)
            if uuid:
                out.append(_text(uuid))
        return tuple(out)

    def _na(self, fn, *args):
        """Call an NVML function; None for any failure (static data and driver-level queries)."""
        try:
            return fn(*args)
        except Exception:
            return None

    def _query(self, errors: list[str], fn_name: str, *args):
        """A per-sample field query: None when N/A; _DeviceFailed when the device is gone."""
        nvml = self._nvml
        fn = getattr(nvml, fn_name, None)
        if fn is None:  # an older pynvml without this function: the field is N/A
            return None
        try:
            return fn(*args)
        except nvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code in _FATAL_CODES:
                raise _DeviceFailed(str(exc) or f"NVML error {code}") from None
            if code not in _NA_CODES:
                errors.append(str(exc) or f"NVML error {code}")
            return None
        except Exception as exc:  # ctypes/ABI trouble in one call must not end the sample
            if type(exc).__name__ == "NVMLLibraryMismatchError":  # unversioned fn missing: N/A
                return None
            errors.append(f"{fn_name}: {exc}")
            return None

    def _pick(self, errors: list[str], names: tuple[str, ...], cache_attr: str, *args):
        """Call the first of `names` this driver has (newer first), remembering which one worked."""
        chosen = getattr(self, cache_attr)
        if chosen is not None:
            return self._query(errors, chosen, *args)
        for name in names:
            if getattr(self._nvml, name, None) is None:
                continue
            try:
                value = getattr(self._nvml, name)(*args)
            except self._nvml.NVMLError as exc:
                code = getattr(exc, "value", None)
                if code == _ERR_FUNCTION_NOT_FOUND:
                    continue  # the bindings know it, the driver does not: try the older one
                if code in _FATAL_CODES:
                    raise _DeviceFailed(str(exc) or f"NVML error {code}") from None
                if code not in _NA_CODES:
                    errors.append(str(exc) or f"NVML error {code}")
                return None
            except Exception as exc:
                if type(exc).__name__ == "NVMLLibraryMismatchError":
                    continue
                errors.append(f"{name}: {exc}")
                return None
            setattr(self, cache_attr, name)
            return value
        return None

    def _processes(self, dev: _Device, errors: list[str] | None = None) -> tuple[GpuProcess, ...]:
        errors = [] if errors is None else errors
        by_pid: dict[int, int | None] = {}
        for names in (("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"),
                      ("nvmlDeviceGetGraphicsRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses_v2")):
            procs = None
            for name in names:
                procs = self._query(errors, name, dev.handle)
                if procs is not None:
                    break
            for proc in procs or ():
                used = getattr(proc, "usedGpuMemory", None)
                mib = None if used is None else int(used) // MIB
                pid = int(proc.pid)
                # A process with a compute and a graphics context is listed twice, same memory.
                if pid not in by_pid or (by_pid[pid] is None and mib is not None):
                    by_pid[pid] = mib
        return tuple(GpuProcess(pid, mib) for pid, mib in sorted(by_pid.items()))

    def _pcie(self, dev: _Device, errors: list[str]) -> tuple[int | None, int | None]:
        now = time.monotonic()
        if dev.pcie_read_at is not None and now - dev.pcie_read_at < self._pcie_refresh_s:
            return dev.pcie
        nvml = self._nvml
        rx = self._query(errors, "nvmlDeviceGetPcieThroughput", dev.handle,
                         getattr(nvml, "NVML_PCIE_UTIL_RX_BYTES", _NVML_PCIE_UTIL_RX_BYTES))
        tx = self._query(errors, "nvmlDeviceGetPcieThroughput", dev.handle,
                         getattr(nvml, "NVML_PCIE_UTIL_TX_BYTES", _NVML_PCIE_UTIL_TX_BYTES))
        dev.pcie = (rx, tx)
        dev.pcie_read_at = now
        return dev.pcie

    def _sample_device(self, dev: _Device) -> GpuSample:
        name = dev.name or f"GPU {dev.index}"
        if not self._ensure_handle(dev):
            return GpuSample(dev.index, name, error="NVML has no handle for this device")
        try:
            return self._read_device(dev)
        except _DeviceFailed as exc:
            return GpuSample(dev.index, dev.name or name, error=exc.message)
        except Exception as exc:  # sampling never raises; one bad device never hides the others
            return GpuSample(dev.index, dev.name or name, error=f"{type(exc).__name__}: {exc}")

    def _read_device(self, dev: _Device) -> GpuSample:
        nvml, h, errors = self._nvml, dev.handle, []
        q = self._query
        util = q(errors, "nvmlDeviceGetUtilizationRates", h)
        mem = q(errors, "nvmlDeviceGetMemoryInfo", h)
        temp = self._pick(errors, ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"), "_temp_fn",
                          h, getattr(nvml, "NVML_TEMPERATURE_GPU", _NVML_TEMPERATURE_GPU))
        power_mw = q(errors, "nvmlDeviceGetPowerUsage", h)
        limit_mw = q(errors, "nvmlDeviceGetEnforcedPowerLimit", h)
        sm_clock = q(errors, "nvmlDeviceGetClockInfo", h, getattr(nvml, "NVML_CLOCK_SM", _NVML_CLOCK_SM))
        fan = q(errors, "nvmlDeviceGetFanSpeed", h)
        reasons = self._pick(errors, ("nvmlDeviceGetCurrentClocksEventReasons",
                                      "nvmlDeviceGetCurrentClocksThrottleReasons"), "_throttle_fn", h)
        fresh = (util, mem, temp, power_mw, limit_mw, sm_clock, fan, reasons)
        if errors and all(v is None for v in fresh):
            # Nothing at all came back, and not because fields are unsupported: the device failed
            # (NVMLError_Unknown on every call is how an XID'd GPU often looks).
            return GpuSample(dev.index, dev.name or f"GPU {dev.index}", error=errors[0])
        rx, tx = self._pcie(dev, errors)
        processes = self._processes(dev, errors)
        if dev.sm_clock_max_mhz is None:
            dev.sm_clock_max_mhz = self._na(nvml.nvmlDeviceGetMaxClockInfo, h,
                                            getattr(nvml, "NVML_CLOCK_SM", _NVML_CLOCK_SM))
        return GpuSample(
            index=dev.index,
            name=dev.name or f"GPU {dev.index}",
            util=None if util is None else int(util.gpu),
            mem_util=None if util is None else int(util.memory),
            mem_used_mib=None if mem is None else int(mem.used) // MIB,
            mem_total_mib=None if mem is None else int(mem.total) // MIB,
            temp_c=None if temp is None else int(temp),
            power_w=None if power_mw is None else round(power_mw / 1000.0, 1),
            power_limit_w=None if limit_mw is None else round(limit_mw / 1000.0, 1),
            sm_clock_mhz=None if sm_clock is None else int(sm_clock),
            sm_clock_max_mhz=dev.sm_clock_max_mhz,
            fan_pct=None if fan is None else int(fan),
            throttle=None if reasons is None else decode_throttle_reasons(int(reasons)),
            pcie_rx_kbs=None if rx is None else int(rx),
            pcie_tx_kbs=None if tx is None else int(tx),
            processes=processes,
            uuid=dev.uuid,
        )


# -------------------------------------------------------------------- process-wide backend

_backend: GpuBackend | None = None
_backend_lock = threading.Lock()


def load_fake_nvml(spec: str) -> Any:
    """'module.path:factory' or 'path/to/file.py:factory' -> factory()."""
    target, sep, factory_name = spec.rpartition(":")
    if not sep or not target or not factory_name:
        raise ValueError(f"expected 'module.path:factory', got {spec!r}")
    if target.endswith(".py") or os.sep in target:
        mod_spec = importlib.util.spec_from_file_location("_traindeck_fake_nvml", target)
        if mod_spec is None or mod_spec.loader is None:
            raise ImportError(f"cannot load {target}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module  # dataclasses look their module up while it executes
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, factory_name)()


def get_backend() -> GpuBackend:
    """The process-wide backend (one NVML session per process), fake if $TRAINDECK_FAKE_NVML is set."""
    global _backend
    with _backend_lock:
        if _backend is None:
            spec = os.environ.get(FAKE_NVML_ENV)
            if spec:
                try:
                    _backend = GpuBackend(nvml=load_fake_nvml(spec))
                except Exception as exc:
                    _backend = GpuBackend(nvml=_BrokenNvml(f"{FAKE_NVML_ENV}={spec} could not be loaded: {exc}"))
            else:
                _backend = GpuBackend()
        return _backend


def reset_backend() -> None:
    """Shut the process-wide backend down; the next get_backend() builds a new one (tests)."""
    global _backend
    with _backend_lock:
        if _backend is not None:
            _backend.shutdown()
        _backend = None


class _BrokenNvml:
    """Stands in for a fake that failed to load, so the failure reads as a clear backend error."""

    class NVMLError(Exception):
        value = 999

    def __init__(self, message: str):
        self._message = message

    def nvmlInit(self) -> None:
        raise OSError(self._message)
