"""training.monitor.gpu against the fake NVML, and against the real pynvml on this (GPU-less) machine."""

from __future__ import annotations

import ast
import json

import pytest

from tests.fixtures import fake_nvml
from tests.support.locations import ROOT
from training.monitor import gpu
from training.monitor.gpu import NO_GPU, GpuBackend, GpuSample, decode_throttle_reasons


def test_eight_b200_samples_are_well_formed():
    fake = fake_nvml.eight_b200(pids=range(500, 508))
    backend = GpuBackend(nvml=fake)
    assert fake.calls["nvmlInit"] == 0  # lazy: nothing touches NVML before the first query
    assert backend.available and backend.error is None
    assert backend.device_count() == 8
    assert backend.driver_version() == "570.124.06"
    infos = backend.devices()
    assert [i.index for i in infos] == list(range(8))
    assert {i.name for i in infos} == {"NVIDIA B200"}
    assert all(i.memory_total_mib == 183_359 and i.uuid.startswith("GPU-") for i in infos)

    for _ in range(5):
        samples = backend.sample()
        assert len(samples) == 8
        for s in samples:
            assert isinstance(s, GpuSample) and s.error is None
            assert 0 <= s.util <= 100 and 0 <= s.mem_util <= 100
            assert 0 < s.mem_used_mib <= s.mem_total_mib == 183_359
            assert 20 < s.temp_c < 95
            assert 0 < s.power_w <= s.power_limit_w * 1.05 and s.power_limit_w == 1000.0
            assert 0 < s.sm_clock_mhz <= s.sm_clock_max_mhz == 1965
            assert s.fan_pct is None  # SXM boards have no fan: N/A, not 0
            assert isinstance(s.throttle, tuple)
            assert s.pcie_rx_kbs >= 0 and s.pcie_tx_kbs >= 0
            assert s.processes == ((500 + s.index, 81_000),)
        json.dumps([s.to_dict() for s in samples])  # JSON-ready as is

    # One NVML session and one handle per device, reused across samples.
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetHandleByIndex"] == 8
    backend.shutdown()
    assert fake.initialized == 0


def test_values_vary_over_time_but_are_deterministic():
    def utils(n):
        backend = GpuBackend(nvml=fake_nvml.eight_b200())
        return [[s.util for s in backend.sample()] for _ in range(n)]

    first, second = utils(20), utils(20)
    assert first == second
    assert len({tuple(row) for row in first}) > 10


def test_unsupported_fields_are_none_never_zero():
    backend = GpuBackend(nvml=fake_nvml.unsupported())
    (s,) = backend.sample()
    assert s.error is None
    assert s.fan_pct is None and s.power_w is None and s.power_limit_w is None
    assert s.pcie_rx_kbs is None and s.pcie_tx_kbs is None
    assert s.util is not None and s.mem_used_mib is not None and s.temp_c is not None
    d = s.to_dict()
    assert d["fan_pct"] is None and d["power_w"] is None and d["pcie_rx_kbs"] is None


def test_unsupported_throttle_is_none_not_empty():
    fake = fake_nvml.four_2080ti()
    fake.devices[2].has_throttle = False
    samples = GpuBackend(nvml=fake).sample()
    assert samples[2].throttle is None and samples[0].throttle is not None


@pytest.mark.parametrize("factory, message", [(fake_nvml.lost_after, "GPU is lost"),
                                              (fake_nvml.unknown_after, "Unknown Error")])
def test_device_error_mid_run_does_not_stop_sampling(factory, message):
    backend = GpuBackend(nvml=factory(3))
    rows = [backend.sample() for _ in range(6)]
    assert all(len(r) == 2 for r in rows)
    assert all(r[1].error is None and r[1].util is not None for r in rows[:3])
    for r in rows[3:]:
        assert r[0].error is None and r[0].util is not None  # the healthy GPU is still sampled
        assert r[1].error == message
        assert r[1].name == "NVIDIA B200" and r[1].util is None and r[1].processes == ()
    # processes_of skips the lost device rather than failing
    assert backend.processes_of([44000, 44001]) == [(44000, 0, 81_000)]


@pytest.mark.parametrize("factory, reason", [
    (fake_nvml.no_driver, "driver is not loaded"),
    (fake_nvml.no_library, "libnvidia-ml.so.1"),
    (fake_nvml.zero_devices, "no devices"),
])
def test_no_gpu_is_a_normal_state(factory, reason):
    backend = GpuBackend(nvml=factory())
    assert not backend.available
    assert backend.error.startswith(f"{NO_GPU}: ") and reason in backend.error
    assert backend.device_count() == 0
    assert backend.devices() == [] and backend.sample() == [] and backend.processes_of([1]) == []


def test_throttle_reasons_decoded():
    assert decode_throttle_reasons(0) == ()
    assert decode_throttle_reasons(0x001) == ("gpu_idle",)
    assert decode_throttle_reasons(0x004 | 0x020 | 0x040) == (
        "sw_power_cap", "sw_thermal_slowdown", "hw_thermal_slowdown")
    assert decode_throttle_reasons(0x1000) == ("bit_0x1000",)

    fake = fake_nvml.eight_b200()
    backend = GpuBackend(nvml=fake)
    seen = set()
    for _ in range(30):
        for s in backend.sample():
            seen.update(s.throttle)
    assert "sw_power_cap" in seen  # busy B200s run into their 1000 W cap now and then
    fake.set_processes(0, [])
    assert backend.sample()[0].throttle == ("gpu_idle",)


def test_older_driver_falls_back_to_throttle_reasons_and_temperature():
    fake = fake_nvml.legacy_driver()
    backend = GpuBackend(nvml=fake)
    for _ in range(3):
        s = backend.sample()[0]
        assert s.temp_c is not None and s.throttle is not None
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 3 * 4
    # the failing newer function is probed once, then the choice is remembered
    assert fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1


def test_processes_and_processes_of():
    fake = fake_nvml.four_2080ti(pids=[])
    fake.place({101: 0, 102: 1, 103: 1})
    fake.set_processes(3, [(104, None)], graphics=True)  # WDDM-style: memory not reported
    backend = GpuBackend(nvml=fake)
    samples = backend.sample()
    assert samples[1].processes == ((102, 40_000), (103, 40_000))
    assert samples[2].processes == ()
    assert samples[3].processes == ((104, None),)
    assert sorted(backend.processes_of([102, 104, 999])) == [(102, 1, 40_000), (104, 3, None)]
    assert backend.processes_of([]) == []


def test_pcie_is_read_at_most_every_refresh_period():
    fake = fake_nvml.four_2080ti()
    backend = GpuBackend(nvml=fake)  # default refresh: 2 s, much longer than this test's samples
    for _ in range(5):
        assert backend.sample()[0].pcie_rx_kbs is not None
    assert fake.calls["nvmlDeviceGetPcieThroughput"] == 2 * 4
    backend = GpuBackend(nvml=fake_nvml.four_2080ti(), pcie_refresh_s=0)
    backend.sample(), backend.sample()
    assert backend._nvml.calls["nvmlDeviceGetPcieThroughput"] == 2 * 2 * 4


def test_get_backend_honours_fake_env(monkeypatch):
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:four_2080ti")
    gpu.reset_backend()
    try:
        backend = gpu.get_backend()
        assert gpu.get_backend() is backend
        assert backend.device_count() == 4
        assert backend.sample()[0].name == "NVIDIA GeForce RTX 2080 Ti"
        gpu.reset_backend()
        monkeypatch.setenv(gpu.FAKE_NVML_ENV, f"{ROOT / 'tests/fixtures/fake_nvml.py'}:no_driver")
        assert "driver is not loaded" in gpu.get_backend().error
        gpu.reset_backend()
        monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:no_such_factory")
        backend = gpu.get_backend()
        assert not backend.available and gpu.FAKE_NVML_ENV in backend.error
    finally:
        gpu.reset_backend()


def test_real_pynvml_gives_a_clean_answer():
    backend = GpuBackend()  # the real nvidia-ml-py
    if backend.available:  # on a GPU box: real samples
        assert len(backend.sample()) == backend.device_count() > 0
        return
    assert backend.error.startswith(f"{NO_GPU}: ")
    assert backend.device_count() == 0 and backend.sample() == [] and backend.devices() == []
    assert backend.driver_version() is None and backend.processes_of([1]) == []
    backend.shutdown()


def test_fake_mirrors_the_real_pynvml_names():
    """Every pynvml name gpu.py or the fake uses exists in the real module with the same value."""
    import pynvml  # only to compare names; training/ imports it in gpu.py alone

    fake = fake_nvml.FakeNvml()
    for name in dir(fake):
        if name.startswith(("NVML_", "nvmlClocksEventReason")):
            assert getattr(pynvml, name) == getattr(fake, name), name
        elif name.startswith("NVMLError_"):
            assert issubclass(getattr(pynvml, name), pynvml.NVMLError), name
            assert getattr(fake, name)().value == getattr(pynvml, name)(0).value, name
        elif name.startswith("nvml") and callable(getattr(fake, name)):
            assert callable(getattr(pynvml, name)), name
    assert isinstance(fake_nvml.NVMLError(fake_nvml.NVML_ERROR_GPU_IS_LOST), fake_nvml.NVMLError_GpuIsLost)

    # and every nvml* function gpu.py calls by name exists in the real bindings
    source = (ROOT / "training/monitor/gpu.py").read_text()
    called = {node.value for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("nvml") and node.value.isidentifier()
              and node.value != "nvml"}  # the telemetry source name, not a function
    called |= {node.attr for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Attribute) and node.attr.startswith("nvml")}
    missing = {name for name in called if not hasattr(pynvml, name)}
    assert not missing and len(called) > 15


def test_only_gpu_py_imports_pynvml():
    offenders = []
    for path in list((ROOT / "training").rglob("*.py")) + list((ROOT / "tui").rglob("*.py")) + [ROOT / "run.py"]:
        if path.name == "gpu.py" and path.parent.name == "monitor" or not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "pynvml" for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
