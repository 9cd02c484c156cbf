"""The look set: every real old print of ``old_photos`` restored as shipped, one row each: the input,
the damage the pipeline marked (red), and the result (docs/old_photos_look.jpg).

    python tools/old_photos_look.py [--checkpoint demo] [--damage auto] [--shared ../shared/data]
                                    [--out docs/old_photos_look.jpg] [--scales 1,4] [--set damage.KEY=VALUE ...]

``--scales``: each print restored at each of these sizes (× its own, cubic; a larger scan of the
same print), one row per print and scale, all shown at one height.

Prints each photo's size, the share of it marked and the seconds it took. The prints carry no
labels: this is for the eye (are the visible cracks of scratched_a and scratched_b marked and gone?).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import Pipeline

H = 320


def _fit(im: np.ndarray) -> np.ndarray:
    """(h,w[,3]) uint8 -> RGB, H px high."""
    im = Image.fromarray(im).convert("RGB")
    return np.asarray(im.resize((max(1, round(im.width * H / im.height)), H), Image.LANCZOS))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--damage", default=None, help="auto | shape | scratches (default: the pipeline's)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "old_photos_look.jpg"))
    ap.add_argument("--scales", default="1", help="comma-separated sizes (× each print) to restore it at")
    ap.add_argument("--set", action="append", default=[], metavar="[SLOT.]KEY=VALUE",
                    help="change a setting first, as pipeline.assemble --set (repeatable)")
    args = ap.parse_args()
    files = sorted((Path(args.shared) / "old_photos").glob("*"))
    if not files:
        print(f"error: no old prints under {Path(args.shared) / 'old_photos'}", file=sys.stderr)
        return 2
    pipe = Pipeline.load(args.checkpoint)
    from pipeline.assemble import apply_setting
    for item in args.set:
        err = apply_setting(pipe, item)
        if err:
            print(f"error: --set {item}: {err}", file=sys.stderr)
            return 2
    rows = []
    for f in files:
        for scale in (float(v) for v in args.scales.split(",")):
            original = np.asarray(Image.open(f).convert("RGB"))
            if scale != 1:
                original = np.asarray(Image.fromarray(original).resize(
                    (round(original.shape[1] * scale), round(original.shape[0] * scale)), Image.BICUBIC))
            t = time.perf_counter()
            r = pipe.restore(original, damage=args.damage, return_intermediates=True)  # (colour kept as decided)
            seconds = time.perf_counter() - t
            mask = np.asarray(r.mask) > 0
            shown = original.copy()
            shown[mask] = (0.4 * shown[mask] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
            at = f" at {scale:g}x" if scale != 1 else ""
            print(f"{f.name}{at}: {mask.shape[1]}x{mask.shape[0]}, marked {mask.mean():.2%}, {seconds:.2f} s; "
                  f"{r.report.damage_why}; {r.report.colour}")
            panels = [_fit(original), _fit(shown), _fit(np.asarray(r.image))]
            gap = np.full((H, 6, 3), 255, np.uint8)
            rows.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], 1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    Image.fromarray(grid).save(args.out, quality=85)
    print(f"wrote {args.out}: {len(rows)} prints (input | marked damage | result)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
