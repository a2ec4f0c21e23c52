"""Peak dense TFLOP/s per GPU model and dtype, each with its source, and MFU against it.

    lookup = peak_for("NVIDIA H100 80GB HBM3", "bf16")   # Peak(tflops=989.5, model="H100 SXM", ...)
    share, why = mfu(achieved_tflops=412.0, peak=lookup)   # (0.416, "")

MFU (model FLOPs utilisation) is the FLOPs the model needs per second (counted once, for one
sample, by torch.utils.flop_counter: forward + backward) over what the GPU could do at most.
The peaks are the vendor's *dense* figures (no 2:4 sparsity: the datasheets print the sparse
number first, twice the dense one) for the tensor cores in that dtype with FP32 accumulation
(what PyTorch asks for; GeForce cards run FP32 accumulation at half their FP16-accumulate rate).

An unknown model, or a dtype the model has no tensor-core figure for, gets no MFU and a reason;
an MFU above 100% is never shown (a wrong peak or a wrong FLOP count, the "563% MFU" of tables
that guessed): it becomes None with the reason, so the number on screen is either right or absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DTYPES = ("fp32", "tf32", "fp16", "bf16")

_HOPPER = "NVIDIA H100 Tensor Core GPU datasheet (dense; sparse figures are 2x)"
_H200 = "NVIDIA H200 Tensor Core GPU datasheet (dense; same SMs and clocks as H100 SXM)"
_BLACKWELL = "NVIDIA HGX B200 datasheet, per GPU (dense; sparse figures are 2x)"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet (dense; SXM and PCIe alike)"
_L40S = "NVIDIA L40S datasheet (dense; sparse figures are 2x)"
_ADA = "NVIDIA Ada GPU architecture whitepaper, appendix A (FP32 accumulate, dense)"
_AMPERE = "NVIDIA Ampere GA102 GPU architecture whitepaper, appendix A (FP32 accumulate, dense)"
_TURING = "NVIDIA Turing GPU architecture whitepaper, appendix A (reference clocks, FP32 accumulate)"
_VOLTA = "NVIDIA V100 Tensor Core GPU datasheet (SXM2)"
_T4 = "NVIDIA T4 datasheet"
_A10 = "NVIDIA A10 datasheet (dense)"


@dataclass(frozen=True)
class GpuPeaks:
    model: str  # the name the table gives it ("H100 SXM")
    pattern: str  # a regex over torch.cuda.get_device_name() / NVML's name, case-insensitive
    tflops: dict[str, float]  # dtype -> peak dense TFLOP/s
    source: str


# Ordered: the first pattern that matches wins (H100 PCIe and NVL before the SXM's bare "H100").
PEAKS: tuple[GpuPeaks, ...] = (
    GpuPeaks("B200", r"\bB200\b", {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1100.0, "fp32": 75.0}, _BLACKWELL),
    GpuPeaks("H200", r"\bH200\b", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 67.0}, _H200),
    GpuPeaks("H100 PCIe", r"\bH100\b.*\bPCIe\b", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0},
             _HOPPER),
    GpuPeaks("H100 NVL", r"\bH100\b.*\bNVL\b", {"bf16": 835.0, "fp16": 835.0, "tf32": 417.5, "fp32": 60.0},
             _HOPPER),
    GpuPeaks("H100 SXM", r"\bH100\b.*\b(SXM|HBM3)\b", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.7, "fp32": 67.0},
             _HOPPER),
    GpuPeaks("A100", r"\bA100\b", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, _A100),
    GpuPeaks("L40S", r"\bL40S\b", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}, _L40S),
    GpuPeaks("A10", r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}, _A10),
    GpuPeaks("RTX 4090", r"\bRTX 4090\b", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}, _ADA),
    GpuPeaks("RTX 3090", r"\bRTX 3090\b", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}, _AMPERE),
    # Turing has no BF16 and no TF32: fp32 models run on its CUDA cores.
    GpuPeaks("RTX 2080 Ti", r"\bRTX 2080 Ti\b", {"fp16": 53.8, "fp32": 13.4}, _TURING),
    GpuPeaks("V100", r"\bV100\b", {"fp16": 125.0, "fp32": 15.7}, _VOLTA),
    GpuPeaks("T4", r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}, _T4),
)


@dataclass(frozen=True)
class Peak:
    """What the table says for one GPU name and dtype: the peak, or None and why."""

    tflops: float | None
    model: str = ""
    dtype: str = ""
    source: str = ""
    why: str = ""  # "" when there is a peak


def peak_for(gpu_name: str, dtype: str, table: tuple[GpuPeaks, ...] = PEAKS) -> Peak:
    """The peak dense TFLOP/s of this GPU (its name as CUDA or NVML gives it) in this dtype."""
    if not gpu_name:
        return Peak(None, dtype=dtype, why="no GPU: MFU is a GPU measure")
    for row in table:
        if re.search(row.pattern, gpu_name, re.IGNORECASE):
            value = row.tflops.get(dtype)
            if value is None:
                return Peak(None, row.model, dtype, row.source,
                            why=f"the {row.model} has no {dtype} tensor-core figure in its source")
            return Peak(value, row.model, dtype, row.source)
    return Peak(None, dtype=dtype, why=f"'{gpu_name}' is not in traindeck's peak table "
                                      f"(traindeck/gpu_peaks.py): no MFU rather than a guessed one")


def mfu(achieved_tflops: float | None, peak: Peak) -> tuple[float | None, str]:
    """(MFU as a fraction, "") or (None, why): never above 1 (100%)."""
    if peak.tflops is None:
        return None, peak.why
    if achieved_tflops is None or achieved_tflops < 0:
        return None, "no FLOP count for this model"
    share = achieved_tflops / peak.tflops
    if share > 1.0:
        return None, (f"{achieved_tflops:.1f} TFLOP/s is above the {peak.model}'s {peak.dtype} peak of "
                      f"{peak.tflops:g}: the peak or the FLOP count is wrong, so no MFU is shown")
    return share, ""
