"""Issue 29: what the ``auto`` gate of the scratch path costs, per kind of old-print damage, and what
other gates would give.

    python benchmarks/scratch_gate.py [--checkpoint demo] [--max-images 50] [--only held|dev] [--scan]

``damage=auto`` keeps the scratch detector's find only when it covers at least ``min_damage`` of
the image and is sure (probability >= 0.9) on at least ``min_sure`` of it; otherwise the photo is
left alone. Here the scratch detector runs once per image *ungated*, and every gate is applied to
its result afterwards, on the photos of ``benchmarks/real_damage.py`` (dev: Kodak24 + McMaster;
held: the held-out training photos, seed 19), as old prints (``old_print``, seeds (29, i)):
- negatives: each photo clean, with film grain, and as an undamaged old print (half with fine
  detail of their own): how many a gate lets through (changed);
- positives: the print with worn damage of every old-print kind mixed (the benchmark's), and with
  each kind alone (bright or dark at random): recall@2px per kind, ungated and under the gate.
``--scan``: every print, damaged or not, then goes through one scan (``pipeline.damage.scan_pair``:
blur, resampling, sharpening, noise, JPEG over the damage too, as on every real scan; the same
damage as without it), and recall counts the damage visible in the scan.
Choose gates on ``held``; ``dev`` is reported, never tuned on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pipeline  # noqa: E402,F401  (first: sets the OpenMP spin count)
from pipeline.color import pil_gray  # noqa: E402
from pipeline.damage import (OLD_PRINT_KINDS, RealDamage, _layer, add_fine_detail, add_grain,  # noqa: E402
                             apply_real_damage, old_print, real_damage, scan, scan_pair)
from real_damage import near, photo_bench, photo_bench_args  # noqa: E402

SURE = 0.9
GATES = [(d, s) for d in (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03) for s in (0.0, 0.0005, 0.001, 0.002)]


def ungated(pipe, gray: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The scratch path's mask without its gate, its share of the image and the share where the
    detector is sure (its probability over all its scales, as the gate sees it; with ``scratch2``
    the higher of the two)."""
    scratch = pipe._ready("scratch") if pipe.scratch is not None else pipe._ready("mask")
    also = [pipe._ready("scratch2")] if pipe.scratch2 is not None else []
    found = scratch.find_scratches(gray, gate=False, tile=pipe._tile, also=also)
    prob = np.maximum.reduce([s.scratch_probabilities(gray, pipe._tile) for s in [scratch, *also]])
    return found, float(found.mean()), float((prob >= SURE).mean())


def collect(pipe, photos: list, scanned: bool = False) -> tuple[list, list]:
    """(negatives [(variant, area, sure)], positives [(kind, recall@2px ungated, area, sure)]);
    ``scanned``: the prints through ``scan``."""
    neg, pos = [], []
    for i, (rgb, *_) in enumerate(photos):
        gray = pil_gray(rgb)
        rng = np.random.default_rng((29, i))
        srng = np.random.default_rng((29, i, 2))  # the scans' own: the same damage with and without
        printed = old_print(add_fine_detail(gray, rng) if rng.random() < 0.5 else gray, rng)
        for variant, g in (("clean", gray), ("grain", add_grain(gray, np.random.default_rng((18, i)), 3.0)),
                           ("print", scan(printed, srng) if scanned else printed)):
            neg.append((variant, *ungated(pipe, g)[1:]))
        cases = [("mixed", real_damage(*gray.shape, rng, kinds=OLD_PRINT_KINDS, worn=True))]
        for kind in OLD_PRINT_KINDS:
            a = _layer(*gray.shape, kind, rng, True) * rng.uniform(0.7, 1.0)
            v = rng.uniform(200, 255) if rng.random() < 0.6 else rng.uniform(0, 55)
            cases.append((kind, RealDamage(a, np.full(gray.shape, v, np.float32), (kind,))))
        for kind, dmg in cases:
            damaged, truth = apply_real_damage(printed, dmg, rng)
            if scanned:
                _, damaged, truth = scan_pair(printed, damaged, dmg, srng)
            if truth.sum() < 20:
                continue
            found, area, sure = ungated(pipe, damaged)
            pos.append((kind, float((truth & near(found)).sum() / truth.sum()), area, sure))
    return neg, pos


def passes(area: float, sure: float, gate: tuple) -> bool:
    return area > 0 and area >= gate[0] and sure >= gate[1]


def report(name: str, neg: list, pos: list, current: tuple) -> None:
    kinds = ["mixed", *OLD_PRINT_KINDS]
    print(f"\n{name}: {len(neg)} undamaged variants, {len(pos)} damaged prints")
    print(f"| kind | n | recall@2px ungated | under the current gate (min_damage {current[0]}, min_sure {current[1]}) |")
    print("|---|---|---|---|")
    for k in kinds:
        rows = [p for p in pos if p[0] == k]
        if rows:
            r = np.mean([p[1] for p in rows])
            g = np.mean([p[1] if passes(p[2], p[3], current) else 0.0 for p in rows])
            print(f"| {k} | {len(rows)} | {r:.3f} | {g:.3f} |")
    print("\n| min_damage | min_sure | undamaged changed (clean / grain / print) | recall@2px mixed | recall@2px all kinds |")
    print("|---|---|---|---|---|")
    for gate in GATES:
        ch = [sum(passes(a, s, gate) for v, a, s in neg if v == var) for var in ("clean", "grain", "print")]
        mixed = np.mean([p[1] if passes(p[2], p[3], gate) else 0.0 for p in pos if p[0] == "mixed"])
        every = np.mean([p[1] if passes(p[2], p[3], gate) else 0.0 for p in pos])
        mark = " (current)" if gate == current else ""
        print(f"| {gate[0]} | {gate[1]}{mark} | {sum(ch)} of {len(neg)} ({ch[0]} / {ch[1]} / {ch[2]}) | {mixed:.3f} | {every:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    photo_bench_args(ap)
    ap.add_argument("--scan", action="store_true", help="the prints scanned (pipeline.damage.scan)")
    args = ap.parse_args()
    pipe, sets = photo_bench(args)
    if not sets:
        return 0
    slot = pipe.scratch if pipe.scratch is not None else pipe.mask
    current = (slot.config["min_damage"], slot.config["min_sure"])
    for name, photos in sets.items():
        report(name + (", scanned prints" if args.scan else ""), *collect(pipe, photos, args.scan), current)
    return 0


if __name__ == "__main__":
    sys.exit(main())
