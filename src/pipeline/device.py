"""Device and precision selection shared by training and inference."""
from __future__ import annotations

import functools

import torch
from stages.runtimes import autocast  # noqa: F401  (training and inference share it)


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix support (AMX-BF16 or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def select_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} requested but no CUDA GPU is available")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on AMX/AVX512-BF16 CPUs and on GPUs of compute capability 8 or more
    (Ampere+), fp16 on older GPUs, fp32 elsewhere. Returns one of fp32, bf16, fp16."""
    precision = str(precision).lower().replace("bfloat16", "bf16").replace("float32", "fp32")
    if precision in ("32", "fp32", "float", "exact"):
        return "fp32"
    if precision == "auto":
        if device.type == "cuda":
            # the compute capability, not is_bf16_supported(): that says True on a T4 or V100,
            # where bf16 is emulated and slower than fp16 with a GradScaler
            return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision in ("bf16", "fp16", "16"):
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("precision=fp16 is for CUDA; use bf16 or fp32 on CPU")
        return "fp16" if precision == "16" else precision
    raise ValueError(f"unknown precision {precision!r} (auto, fp32, bf16, fp16)")


def configure_training(device: torch.device) -> None:
    """Backend flags for training on ``device``: cuDNN picks the fastest kernels for the fixed
    training shapes (``benchmark``); fp32 matmuls and convolutions may use TF32 on Ampere+
    (PyTorch's default for convolutions), which training tolerates."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def exact_fp32(device: torch.device) -> None:
    """fp32 means fp32 on ``device``: no TF32 (Ampere+ GPUs would otherwise round convolution
    inputs to 10-bit mantissas). Inference in ``fp32`` (the mask slot, ``evaluate``) calls this."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
