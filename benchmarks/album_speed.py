"""Album speed (issue 32): wall time of the whole ``python -m pipeline.restore`` command on N
competition-size inputs (512×512 grays, one constant-gray shape each) to PNGs and a zip.

    python benchmarks/album_speed.py [--n 120] [--repeats 5] [--checkpoint demo] [--shared ../shared/data]
        [-- EXTRA RESTORE ARGS]

The inputs are crops of the training photos when ``--shared`` has them, else seeded synthetic
scenes (smooth gradients and blocks: the speed does not depend on the content). The engine cache
is warmed by one run first (as on any machine after its first album); then ``--repeats`` runs,
each a new process into a new folder. Prints every run's seconds and the min / median.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_inputs(folder: Path, n: int, shared: Path) -> str:
    """``n`` damaged 512×512 gray PNGs in ``folder``; returns where their content came from."""
    from pipeline.damage import apply_damage, random_damage
    rng = np.random.default_rng(32)
    photos = sorted((shared / "photos" / "scenes").glob("*.jpg"))[:n] if (shared / "photos").is_dir() else []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if photos:
            gray = np.asarray(Image.open(photos[i % len(photos)]).convert("L").resize((512, 512)))
        else:
            y, x = np.mgrid[0:512, 0:512]
            gray = (128 + 60 * np.sin(x / rng.uniform(20, 90)) * np.cos(y / rng.uniform(20, 90))
                    + rng.normal(0, 8, (512, 512))).clip(0, 255).astype(np.uint8)
        damaged = apply_damage(gray, random_damage(512, 512, rng), rng)
        Image.fromarray(damaged).save(folder / f"TEST_{i:03d}.png")
    return f"{len(photos)} photos of {shared}/photos/scenes" if photos else "synthetic scenes"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("extra", nargs="*", help="more arguments for pipeline.restore (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = make_inputs(tmp / "in", args.n, Path(args.shared))
        cmd = [sys.executable, "-m", "pipeline.restore", str(tmp / "in"), "--checkpoint", args.checkpoint,
               "--no-progress", *args.extra]
        times = []
        for r in range(args.repeats + 1):  # run 0 warms the engine cache
            out = tmp / f"out{r}"
            t = time.perf_counter()
            subprocess.run([*cmd, "--out", str(out), "--zip", str(out / "submission.zip")], check=True,
                           stderr=subprocess.DEVNULL)
            if r:
                times.append(time.perf_counter() - t)
            shutil.rmtree(out)
    print(f"{args.n} inputs ({source}), {' '.join(cmd[1:4])} ... {' '.join(args.extra)}")
    print("runs (s): " + " ".join(f"{t:.2f}" for t in times))
    print(f"min {min(times):.2f} s, median {statistics.median(times):.2f} s "
          f"({args.n / statistics.median(times):.1f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
