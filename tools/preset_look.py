"""The presets side by side, for the eye: each real old print of ``old_photos`` and a few dev photos
(their gray: Kodak24 + McMaster, never trained on), one row each: the input, what the
``competition`` preset gives (the defaults before presets) and what ``photo`` gives.

    python tools/preset_look.py [--checkpoint demo] [--dev 8] [--out docs/preset_look.jpg]

Look for: no green faces, no blue skies on sepia prints, no grey stripes where a hole was filled.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import Pipeline
from pipeline.io import list_images

H = 300
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _fit(im: np.ndarray) -> np.ndarray:
    im = Image.fromarray(im).convert("RGB")
    return np.asarray(im.resize((max(1, round(im.width * H / im.height)), H), Image.LANCZOS))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--dev", type=int, default=8, help="how many dev photos (every 5th of Kodak24 + McMaster)")
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "preset_look.jpg"))
    args = ap.parse_args()
    olds = sorted((args.shared / "old_photos").glob("*"))
    dev = (list_images(args.shared / "photos" / "kodak24") + list_images(args.shared / "photos" / "mcmaster"))[::5]
    if not olds:
        print(f"error: no old prints under {args.shared / 'old_photos'}", file=sys.stderr)
        return 2
    pipe = Pipeline.load(args.checkpoint)
    rows = []
    for f in olds + dev[:args.dev]:
        img = Image.open(f)
        img = img.convert("L") if f in dev else img.convert("RGB")
        if max(img.size) > 768:
            img.thumbnail((768, 768), Image.LANCZOS)
        src = np.asarray(img)
        outs = [pipe.restore(src, preset=p, return_intermediates=True) for p in ("competition", "photo")]
        print(f"{f.name}: photo preset: {outs[1].report.colour}; damage: {outs[1].report.damage_why}")
        panels = [_fit(src)] + [_fit(np.asarray(o.image)) for o in outs]
        gap = np.full((H, 6, 3), 255, np.uint8)
        rows.append(np.concatenate([x for p in panels for x in (p, gap)][:-1], 1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    Image.fromarray(grid).save(args.out, quality=82)
    print(f"wrote {args.out}: {len(rows)} rows (input | competition | photo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
