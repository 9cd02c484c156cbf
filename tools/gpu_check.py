"""The CUDA paths, timed: training samples/s per stage and AMP precision, and restore ms/image.

    python tools/gpu_check.py [--image-size 512] [--batch-size 16] [--steps 20] [--device cuda]

For each stage (the shipped demo networks) and precision (bf16, fp16; fp32 with ``--fp32``):
samples/s of forward + backward + AdamW step with channels_last and a GradScaler for fp16, on a
fixed synthetic batch (the loader is timed by ``train_speed.py``). Then
``Pipeline.load(checkpoint, device=...)`` restore ms/image at 512x512 (median, after a warm-up),
and the peak GPU memory. Scores on the GPU: ``dev_benchmark.py --device cuda``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pipeline import Pipeline
from pipeline.device import autocast


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(stage, device, precision: str, size: int, batch_size: int, steps: int) -> float:
    """Training samples/s of ``stage`` (a fresh copy of a shipped network) on synthetic data."""
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(batch_size, 1, size, size, generator=g)
    batch = {"gray": gray, "mask": (torch.rand(batch_size, 1, size, size, generator=g) > 0.9).float(),
             "target_gray": gray, "rgb": torch.rand(batch_size, 3, size, size, generator=g)}
    transform = getattr(stage, "sample_transform", lambda: None)()
    if transform is not None:  # what the loader workers add (the inpainter's Telea prefill): not timed here
        batch = {**batch, "prefilled": torch.stack([transform({k: v[i] for k, v in batch.items()})["prefilled"]
                                                    for i in range(batch_size)])}
    batch = {k: v.to(device).contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
    stage = stage.to(device).to(memory_format=torch.channels_last).train()
    stage.prepare([batch], 1)
    opt = torch.optim.AdamW(stage.parameters(), 1e-4, fused=device.type == "cuda")  # as the trainer
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps (cuDNN autotuning, allocator)
            _sync(device)
            t = time.perf_counter()
        with autocast(device, precision):
            loss = stage.loss(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--fp32", action="store_true", help="also time fp32 training")
    args = ap.parse_args()
    device = torch.device(args.device)
    from pipeline.device import configure_training
    configure_training(device)  # the trainer's own backend flags (cuDNN benchmark on CUDA)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, {args.image_size} px, batch {args.batch_size}", flush=True)
    shipped = Pipeline.load(args.checkpoint)
    precisions = (["fp32"] if args.fp32 else []) + ["bf16"] + (["fp16"] if device.type == "cuda" else [])
    for slot, st in shipped.stages.items():
        for p in precisions:
            fresh = type(st)(**st.config)
            fresh.load_state_dict(st.state_dict())
            sps = train_rate(fresh, device, p, args.image_size, args.batch_size, args.steps)
            print(f"train {slot:9s} {p}: {sps:7.1f} samples/s", flush=True)
    pipe = Pipeline.load(args.checkpoint, device=args.device)
    rng = np.random.default_rng(0)
    gray = (rng.random((512, 512)) * 255).astype(np.uint8)
    gray[100:220, 150:330] = 40
    pipe.restore(gray)
    times = []
    for _ in range(args.repeats):
        _sync(device)
        t = time.perf_counter()
        pipe.restore(gray)
        _sync(device)
        times.append(1000 * (time.perf_counter() - t))
    engines = ", ".join(f"{k}={'-'.join(map(str, pipe.engine(k)))}" for k in pipe.stages)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan")
    print(f"restore 512x512 on {args.device} ({engines}): {statistics.median(times):.1f} ms/image; "
          f"peak GPU memory {peak:.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
