"""Restoring with reference photos: what a verified match gives, and that nothing else changes.

    python benchmarks/references.py [--queries 24] [--distractors 1000] [--checkpoint demo]

Built from the training photos (never the Kodak/McMaster dev benchmark): each query is a 512x512
view of a photo (upscaled 2x), damaged with seeded competition damage. Its library holds, one case
at a time, (a) the same view (other damage: the reference is the undamaged photo), (b) the view
shifted by half (256 px), (c) shifted by a few pixels, (d) a rescaled (0.85/1.15x) or rotated
(+-3 deg) view, (e) nothing of its photo; every library also holds the distractors (views of
other scenes). Then every distractor, damaged, is matched against the others (none is of its
scene: every match found is a false one). Prints the competition score with and without references per case, how many queries
found a match, false matches, and the match time.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

import pipeline  # noqa: F401  (before torch: see its __init__)

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"
SETS = ("camvid", "osie", "imagenet_sample", "imagen", "scenes", "road_imagenet")


def group(p: Path) -> str:
    """Photos of one scene share a group: a CamVid drive sequence's frames, else the file itself."""
    m = re.match(r"CamVid_[a-z]+_([^_]+)_", p.name)
    return m.group(1) if m else p.name


def photos() -> list[Path]:
    out = []
    for s in SETS:
        out += sorted(p for p in (ROOT / s).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return out


def big(path: Path) -> np.ndarray:
    """The photo upscaled so its shorter side is at least 576 px (a 512 view with room to shift)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    s = max(2.0, 576 / min(rgb.shape[:2]))
    return cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)


def view(img: np.ndarray, x: int, y: int, scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """The 512x512 view at (x, y), optionally of the photo rescaled/rotated about its centre."""
    if scale != 1.0 or angle:
        c = (x + 256, y + 256)
        m = cv2.getRotationMatrix2D(c, angle, scale)
        img = cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(img[y:y + 512, x:x + 512])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--distractors", type=int, default=1000)
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from pipeline import Pipeline
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from pipeline.metrics import score
    from pipeline.references import Library

    files = [p for p in photos() if min(Image.open(p).size) >= 200]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(files))
    qfiles, seen = [], set()
    for i in order:  # one query per scene, wide enough for a half shift
        w, h = Image.open(files[i]).size
        if w >= 1.3 * h and group(files[i]) not in seen and len(qfiles) < args.queries:
            qfiles.append(files[i])
            seen.add(group(files[i]))
    dfiles, thumbs, dups = [], [], 0
    for i in order:  # unrelated: no scene of a query, one photo per scene, no duplicate photo
        if group(files[i]) in seen or len(dfiles) >= args.distractors:
            continue
        t = np.asarray(Image.open(files[i]).convert("L").resize((32, 32)), np.float64).ravel()
        t = (t - t.mean()) / (t.std() + 1e-6)
        if thumbs and (np.stack(thumbs) @ t / t.size).max() > 0.9:
            dups += 1  # the data sets hold a few duplicates (e.g. osie 1279 = 1374): the same scene
            continue
        dfiles.append(files[i])
        thumbs.append(t)
        seen.add(group(files[i]))
    pipe = Pipeline.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "distractors").mkdir()
        for i, f in enumerate(dfiles):
            b = big(f)
            Image.fromarray(view(b, (b.shape[1] - 512) // 2, (b.shape[0] - 512) // 2)).save(tmp / "distractors" / f"d{i:05d}.png")
        t = time.perf_counter()
        base = Library.build([tmp / "distractors"], workers=args.workers)
        print(f"{len(base)} distractors indexed in {time.perf_counter() - t:.1f} s "
              f"({dups} near-duplicate photos left out)")
        cases = {"a same view": lambda b: view(b, 0, 0), "b half shift": lambda b: view(b, 256, 0),
                 "c few px": lambda b: view(b, 3, 2), "d rescaled/rotated": None, "e nothing": None}
        queries = []
        for i, f in enumerate(qfiles):
            b = big(f)
            truth = view(b, 0, 0)
            d = random_damage(512, 512, np.random.default_rng(1000 + i))
            queries.append((b, truth, apply_damage(pil_gray(truth), d), d.mask))
        for case, make in cases.items():
            refdir = tmp / case[0]
            refdir.mkdir()
            for i, (b, *_rest) in enumerate(queries):
                if case[0] == "d":
                    s, a = ((0.85, 0), (1.15, 0), (1.0, 3), (1.0, -3))[i % 4]
                    Image.fromarray(view(b, 0, 0, s, a)).save(refdir / f"q{i:03d}.png")
                elif make is not None:
                    Image.fromarray(make(b)).save(refdir / f"q{i:03d}.png")
            lib = Library.concat([base, Library.build([refdir])]) if any(refdir.iterdir()) else base
            plain, used, found, identical, ms = [], [], 0, 0, []
            for b, truth, gray, mask in queries:
                r0 = pipe.restore(gray, mask=mask, return_intermediates=True)
                t = time.perf_counter()
                ref = lib.match(gray, mask)
                ms.append(1000 * (time.perf_counter() - t))
                found += ref is not None
                r1 = pipe.restore(gray, mask=mask, references=lib, return_intermediates=True)
                identical += np.array_equal(np.asarray(r0.image), np.asarray(r1.image))
                plain.append(score(truth, np.asarray(r0.image), mask)["score"])
                used.append(score(truth, np.asarray(r1.image), mask)["score"])
            print(f"({case}) library {len(lib)}: score {np.mean(plain):.4f} without -> {np.mean(used):.4f} with "
                  f"references ({np.mean(used) - np.mean(plain):+.4f}); matched {found}/{len(queries)}, "
                  f"unchanged {identical}/{len(queries)}; match {np.median(ms):.0f} ms median", flush=True)
        false = 0
        for i, f in enumerate(sorted((tmp / "distractors").iterdir())):
            rgb = np.asarray(Image.open(f))
            d = random_damage(512, 512, np.random.default_rng(5000 + i))
            false += base.match(apply_damage(pil_gray(rgb), d), d.mask, skip={i}) is not None
        print(f"distractors matched against the other distractors: {false} false matches in {len(base)}", flush=True)


if __name__ == "__main__":
    main()
