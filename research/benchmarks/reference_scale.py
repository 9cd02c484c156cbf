"""The reference index at the competition's scale: build time, size on disk, memory, match time.

    python benchmarks/reference_scale.py --n 30000 --dir /tmp/refs30k [--workers 2]

Writes ``--n`` synthetic 512x512 PNG views of the training photos (upscaled 2x, random crops and
flips; the competition's train_gt is 29,603 such PNGs) into ``--dir`` once, then times
``python -m pipeline.references build`` over them in a new process (wall time and peak memory),
and matching 40 damaged queries against the loaded index (20 of its views, 20 views of bsds500 photos, which it does not hold).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from references import big, photos  # noqa: E402


def write_views(n: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    have = len(list(out.glob("*.png")))
    files = [p for p in photos() if min(Image.open(p).size) >= 200]
    rng = np.random.default_rng(0)
    for i in range(have, n):
        b = big(files[i % len(files)])
        y, x = rng.integers(0, b.shape[0] - 511), rng.integers(0, b.shape[1] - 511)
        v = b[y:y + 512, x:x + 512]
        v = v[:, ::-1] if rng.random() < 0.5 else v
        Image.fromarray(np.ascontiguousarray(v)).save(out / f"v{i:06d}.png", compress_level=1)
        if (i + 1) % 5000 == 0:
            print(f"wrote {i + 1} views", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--dir", default="/tmp/refs30k")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    d = Path(args.dir)
    write_views(args.n, d / "views")
    idx = d / "refs.idx"
    if idx.is_file() and not args.rebuild:
        print(f"{idx} exists (--rebuild to time the build again)")
    else:
        build(d, idx, args.workers)
    measure(d, idx)


def build(d: Path, idx: Path, workers: int) -> None:
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "pipeline.references", "build", str(d / "views"),
                        "--out", str(idx), "--workers", str(workers)], capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak = next((ln.split(":")[1].strip() for ln in r.stderr.splitlines() if "Maximum resident" in ln), "?")
    print(r.stdout.strip(), f"\nbuild: {wall:.0f} s wall, peak RSS {int(peak) / 2 ** 20:.2f} GB" if peak != "?" else "")
    print(f"index on disk: {idx.stat().st_size / 2 ** 20:.0f} MB")


def measure(d: Path, idx: Path) -> None:
    from pipeline import Pipeline
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from pipeline.references import Library
    t = time.perf_counter()
    lib = Library.load(idx)
    lib.candidates(np.zeros((1, 32), np.uint8))  # builds the hash tables (on first use)
    print(f"load: {time.perf_counter() - t:.1f} s with the hash tables")
    pipe = Pipeline.load("demo")
    views = sorted((d / "views").glob("*.png"))
    bsds = sorted((Path(__file__).resolve().parents[3] / "shared/data/photos/bsds500").rglob("*.jpg"))
    rng = np.random.default_rng(1)
    times, found, added = {"in": [], "out": []}, {"in": 0, "out": 0}, {"in": [], "out": []}
    for k in range(40):
        if k % 2 == 0:
            rgb, kind = np.asarray(Image.open(views[rng.integers(len(views))])), "in"
        else:  # a view of a photo from another set (bsds500): not in the index
            b = big(bsds[rng.integers(len(bsds))])
            rgb, kind = np.ascontiguousarray(b[:512, :512]), "out"
        dmg = random_damage(512, 512, np.random.default_rng(k))
        gray = apply_damage(pil_gray(rgb), dmg)
        t = time.perf_counter()
        found[kind] += lib.match(gray, dmg.mask) is not None
        times[kind].append(1000 * (time.perf_counter() - t))
        pipe.restore(gray)
        t = time.perf_counter()
        pipe.restore(gray)
        t1 = time.perf_counter()
        pipe.restore(gray, references=lib)
        added[kind].append(1000 * (time.perf_counter() - t1) - 1000 * (t1 - t))
    for kind in ("in", "out"):
        print(f"match, photo {kind} the index: {np.median(times[kind]):.0f} ms median, {max(times[kind]):.0f} ms max; "
              f"matched {found[kind]}/20; a whole 512x512 restore takes {np.median(added[kind]):+.0f} ms "
              f"(median) with the references")
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GB "
          "(the index, its tables and the demo pipeline)")


if __name__ == "__main__":
    main()
