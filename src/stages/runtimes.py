"""What runs a stage's network (``Stage.use_runtime``): torch under autocast (bf16/fp16), or a CPU
inference engine, ONNX Runtime (fp32) or OpenVINO (fp32/bf16). The engines take ONNX (bytes or a
file) and map a (B,C,H,W) float32 array to the network's output array."""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .registry import atomic_write_bytes


def autocast(device: torch.device, precision: str):
    """A context manager running the enclosed ops in ``precision`` (fp32 = no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class TorchAutocast:
    """torch itself, under autocast in ``precision`` (bf16, or fp16 on CUDA): a module and a
    tensor in, its output out."""

    def __init__(self, precision: str):
        if precision not in ("bf16", "fp16"):
            raise ValueError(f"torch autocast runs bf16 or fp16, not {precision}")
        self.precision, self.label = precision, f"torch-{precision}"

    def __call__(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, self.precision):
            return net(x)


def export_onnx(net: nn.Module, in_channels: int, path: str | os.PathLike | None = None) -> bytes:
    """``net`` as ONNX bytes (opset 17): input ``x`` (B,C,H,W) float32 with dynamic batch and
    size, output ``y``; also written to ``path`` (atomically) when given. ``net`` is copied, so
    the caller's module keeps its dtype, device and mode."""
    import copy
    net = copy.deepcopy(net).float().eval().to("cpu")
    buf = io.BytesIO()
    dyn = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, in_channels, 64, 64), buf, input_names=["x"],
                          output_names=["y"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": dyn, "y": dyn})
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data


class OnnxRuntime:
    """An ONNX Runtime session (fp32): (B,C,H,W) float32 array -> output array."""

    def __init__(self, model, precision: str, threads: int, cache_dir: str | None = None):
        if precision != "fp32":
            raise ValueError(f"engine 'onnxruntime' runs fp32 only, not {precision}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("backend='onnx' needs onnxruntime: pip install onnxruntime") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        # no busy-waiting between runs: the torch and numpy work around the network needs the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.label = "onnxruntime-fp32"

    def __call__(self, x):
        return self.session.run(None, {"x": x})[0]


class OpenVINORuntime:
    """An OpenVINO CPU model (dynamic shapes), fp32 or bf16: array -> array. One infer request
    per thread (a request is not thread-safe)."""

    def __init__(self, model, precision: str, threads: int, cache_dir: str | None = None):
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"engine 'openvino' runs fp32 or bf16, not {precision}")
        try:
            import openvino as ov
        except ImportError:
            raise RuntimeError("backend='openvino' needs openvino: pip install openvino") from None
        import threading
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir:
            config["CACHE_DIR"] = cache_dir
        # a file path lets a cache hit skip reading the model; bytes: read_model parses ONNX directly
        # (~10x faster than convert_model)
        src = core.read_model(model) if isinstance(model, bytes) else str(model)
        self.compiled = core.compile_model(src, "CPU", config)
        # The first numpy array that crosses into OpenVINO initialises pybind11's numpy bridge
        # once per process; threads doing that together can deadlock (pybind11's call-once
        # against the GIL: an album with --jobs 2+ hung in 1 of 5 runs). Do it here, in one thread.
        import numpy as np
        ov.Tensor(np.zeros(1, np.float32)).data
        self._local = threading.local()
        self.label = f"openvino-{precision}"

    def __call__(self, x):
        req = getattr(self._local, "request", None)
        if req is None:
            req = self._local.request = self.compiled.create_infer_request()
        return req.infer({0: x}, share_outputs=False)[0]


RUNTIMES = {"onnxruntime": OnnxRuntime, "openvino": OpenVINORuntime}
