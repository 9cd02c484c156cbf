"""Issue 29: the scratch path's second way through the ``auto`` gate, ``min_agree``: where the
scratch detectors (``scratch``, ``scratch2``, and the turned views of them named by their
``agree_views``: ``min_votes`` of these voters) agree on enough of the image, the regions they
agree on pass even when the find as a whole fails ``min_damage`` / ``min_sure`` / ``min_line``.

    python benchmarks/agree_gate.py [--checkpoint demo] [--max-images 50] [--only held|dev]
                                    [--values 0,0.001,0.002,0.003,0.005]
                                    [--set "scratch2.agree_views=[mirror,transpose]" --set scratch.min_votes=3]

The photos and cases are ``benchmarks/real_damage.py``'s (dev: Kodak24 + McMaster; held: the
held-out training photos, seed 19; old prints with generator seeds (29, i), crisp and scanned), so
the row of the checkpoint's own ``min_agree`` is that benchmark's. Each detector runs once per
image; every ``min_agree`` then goes through the pipeline's own ``detect``. Prints, per value: the
undamaged variants changed (clean / with grain / old print / scanned print) and the damaged
prints' recall@2px / precision@2px / IoU. Choose on ``held``; ``dev`` is reported, never tuned on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import pipeline  # noqa: E402,F401  (first: sets the OpenMP spin count)
from pipeline.color import pil_gray  # noqa: E402
from pipeline.damage import (OLD_PRINT_KINDS, add_fine_detail, add_grain, apply_real_damage, old_print,  # noqa: E402
                             real_damage, scan, scan_pair)
from real_damage import _found, photo_bench, photo_bench_args  # noqa: E402
from pipeline.pipeline import SCRATCH_SLOTS  # noqa: E402
from stages import MaskDetector  # noqa: E402


def cache_probabilities() -> None:
    """Each detector's ``scratch_probabilities`` computed once per image (the gate settings do not
    change them)."""
    run, seen = MaskDetector.scratch_probabilities, {}

    def cached(self, gray, tile=(1024, 128)):
        key = (id(self), gray.shape, hash(gray.tobytes()))
        if key not in seen:
            if len(seen) > 64:
                seen.clear()
            seen[key] = run(self, gray, tile)
        return seen[key]
    MaskDetector.scratch_probabilities = cached


def cases(photos: list):
    """(variant, gray, true mask or None) per photo, in ``real_damage._old_print_case``'s order."""
    for i, (rgb, *_) in enumerate(photos):
        gray = pil_gray(rgb)
        yield "clean", gray, None
        yield "grain", add_grain(gray, np.random.default_rng((18, i)), 3.0), None
        rng = np.random.default_rng((29, i))
        printed = old_print(add_fine_detail(gray, rng) if rng.random() < 0.5 else gray, rng)
        yield "print", printed, None
        dmg = real_damage(*gray.shape, rng, kinds=OLD_PRINT_KINDS, worn=True)
        damaged, truth = apply_real_damage(printed, dmg, rng)
        if not truth.any():
            yield "scan", scan(printed, rng), None
            continue
        yield "damaged print", damaged, truth
        clean_scan, damaged_scan, truth_scan = scan_pair(printed, damaged, dmg, rng)
        yield "scan", clean_scan, None
        if truth_scan.any():
            yield "damaged scan", damaged_scan, truth_scan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    photo_bench_args(ap)
    ap.add_argument("--values", default="0,0.001,0.002,0.003,0.005", help="min_agree values, comma-separated")
    args = ap.parse_args()
    pipe, sets = photo_bench(args)
    if not sets:
        return 0
    dets = [pipe.stages[s] for s in SCRATCH_SLOTS if s in pipe.stages]
    if len(dets) + sum(len(d.config["agree_views"]) for d in dets) < 2:
        print(f"{args.checkpoint}: min_agree needs two voters: a scratch and a scratch2 detector, or agree_views")
        return 1
    first = dets[0]  # its threshold and gate decide
    cache_probabilities()
    values = [float(v) for v in args.values.split(",")]
    own = first.config["min_agree"]
    for name, photos in sets.items():
        changed = {v: {k: 0 for k in ("clean", "grain", "print", "scan")} for v in values}
        found = {v: {"damaged print": [], "damaged scan": []} for v in values}
        for variant, gray, truth in cases(photos):
            for v in values:
                first.set("min_agree", v)
                m = pipe.detect(gray)
                if truth is None:
                    changed[v][variant] += bool(m.any())
                else:
                    found[v][variant].append(_found(truth, m))
        print(f"\n{name}: {len(photos)} photos ({args.checkpoint}; its own min_agree {own})")
        print("| min_agree | undamaged changed: clean / grain / print / scan | prints r / p / IoU | scans r / p / IoU |")
        print("|---|---|---|---|")
        for v in values:
            c = changed[v]
            p, s = (np.array(found[v][k]) for k in ("damaged print", "damaged scan"))
            print(f"| {v} | {c['clean']} / {c['grain']} / {c['print']} / {c['scan']} | "
                  f"{p[:, 0].mean():.3f} / {np.nanmean(p[:, 1]):.3f} / {p[:, 2].mean():.3f} | "
                  f"{s[:, 0].mean():.3f} / {np.nanmean(s[:, 1]):.3f} / {s[:, 2].mean():.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
