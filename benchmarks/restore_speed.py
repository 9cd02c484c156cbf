"""Time ``Pipeline.restore`` on 512x512 inputs against the seeds' reference, and score each setting.

    python benchmarks/restore_speed.py [--checkpoint demo] [--repeats 7] [--threads 2] [--score-images 12] [--startup]

Reference: three fp32 segmentation-models-pytorch UNets with resnet34 encoders chained
mask -> inpaint -> colorize (1->1, 2->1, 1->3 channels) at 512x512, no post-processing.
Settings: torch fp32, torch bf16 (CPUs with AMX/AVX512-BF16), ONNX Runtime fp32, OpenVINO fp32,
OpenVINO bf16 and the checkpoint as shipped (the engines when installed).
Prints the median ms/image (after one warm-up; the settings take turns) of each setting, the ratio to the reference, and
the dev-benchmark score of each shipped setting (so speed cannot cost score silently), and how far
"as shipped" is from the fastest setting. ``--startup``: wall time of ``python -m pipeline.restore``
on one 512x512 image in a new process, with the engine cache cold, warm, and off.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (before torch: it sets torch's OpenMP spin count, see its __init__)
import torch


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def reference(repeats: int, x: torch.Tensor) -> float:
    import segmentation_models_pytorch as smp
    nets = [smp.Unet("resnet34", encoder_weights=None, in_channels=c, classes=k).eval()
            for c, k in ((1, 1), (2, 1), (1, 3))]

    @torch.inference_mode()
    def run():
        m = torch.sigmoid(nets[0](x))
        g = nets[1](torch.cat([x, m], 1))
        return nets[2](g)
    return median_ms(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-images", type=int, default=12, help="dev-benchmark images scored per setting")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--startup", action="store_true", help="also time a new process's first restore")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pipeline import Pipeline
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from pipeline.device import cpu_has_bf16
    from pipeline.evaluate import evaluate

    rng = np.random.default_rng(0)
    y, xx = np.mgrid[0:512, 0:512] / 512
    rgb = (np.stack([np.sin(7 * xx + 1), np.cos(5 * y), np.sin(3 * (xx + y))], -1) * 127 + 128).astype(np.uint8)
    gray = apply_damage(pil_gray(rgb), random_damage(512, 512, rng))

    print(f"torch {torch.__version__}, {args.threads} threads, bf16-capable CPU: {cpu_has_bf16()}")
    ref = None
    if not args.skip_reference:
        ref = reference(args.repeats, torch.from_numpy(gray).float().div(255)[None, None])
        print(f"reference (3x fp32 resnet34 UNet, 512x512): {ref:.1f} ms/image")

    data = None
    dev = [Path(args.shared) / "photos" / "kodak24", Path(args.shared) / "photos" / "mcmaster"]
    if args.score_images and all(d.is_dir() for d in dev):
        from pipeline.data import PhotoData
        data = PhotoData(dev, image_size=512, val_fraction=1.0, seed=0).val

    import importlib.util
    settings = [{"backend": "torch", "precision": "fp32"}]
    settings += [{"backend": "torch", "precision": "bf16"}] if cpu_has_bf16() else []
    if importlib.util.find_spec("onnxruntime"):
        settings.append({"backend": "onnx", "precision": "fp32"})
    if importlib.util.find_spec("openvino"):
        settings += [{"backend": "openvino", "precision": p} for p in ("fp32", "bf16")]
        if cpu_has_bf16():  # the detector and colorizer in fp32 (exact), the inpainter in bf16
            settings.append({"backend": "openvino", "precision": {"mask": "fp32", "inpaint": "bf16", "colorize": "fp32"}})
    shipped = Pipeline.load(args.checkpoint)
    print(f"{args.checkpoint} ships precision={shipped.precision} backend={shipped.backend}; engines: "
          + ", ".join(f"{k}={'-'.join(map(str, shipped.engine(k)))}" for k in shipped.stages)
          + f"; GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    settings.append({})  # as shipped
    pipes = [Pipeline.load(args.checkpoint, **o) for o in settings]
    for p in pipes:
        p.restore(gray)  # warm-up (the onnx backend exports here)
    # settings take turns, so a slow spell of this shared machine hits all of them alike
    times = [[] for _ in pipes]
    for _ in range(args.repeats):
        for p, ts in zip(pipes, times):
            t = time.perf_counter()
            p.restore(gray)
            ts.append((time.perf_counter() - t) * 1000)
    medians = [statistics.median(ts) for ts in times]
    for opts, pipe, ms in zip(settings, pipes, medians):
        label = " ".join(f"{k}={v}" for k, v in opts.items()) or "as shipped"
        line = f"{args.checkpoint} {label}: {ms:.1f} ms/image"
        if ref:
            line += f" ({ref / ms:.1f}x faster than the reference)"
        if data is not None:
            m = evaluate(pipe, data, max_images=args.score_images, progress=False)
            line += f"; dev score on {m['n']} images {m['score']:.4f} (S={m['S']:.4f} M={m['M']:.4f} C={m['C']:.4f})"
        print(line, flush=True)
    best = min(range(len(settings) - 1), key=lambda i: medians[i])
    print(f"as shipped {medians[-1]:.1f} ms vs the fastest setting ({settings[best]}) {medians[best]:.1f} ms: "
          f"{100 * (medians[-1] / medians[best] - 1):+.1f}%")
    if args.startup:
        startup(args.checkpoint, gray)


def startup(checkpoint: str, gray: np.ndarray) -> None:
    """``python -m pipeline.restore`` on one image in a new process: engine cache cold, warm, off."""
    import subprocess
    import sys
    import tempfile

    from PIL import Image
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        Image.fromarray(gray).save(src)
        cmd = [sys.executable, "-m", "pipeline.restore", str(src), "--out", str(Path(tmp) / "out"),
               "--checkpoint", checkpoint, "--no-progress"]
        for label, cache in (("cold cache", str(Path(tmp) / "cache")), ("warm cache", str(Path(tmp) / "cache")),
                             ("cache off", "off")):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "RESTORE_PIPELINE_CACHE": cache})
            print(f"python -m pipeline.restore, one 512x512 image, {label}: {time.perf_counter() - t:.2f} s", flush=True)


if __name__ == "__main__":
    main()
