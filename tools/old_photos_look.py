"""The look set: every real old print of ``old_photos`` restored as shipped, one row each: the input,
the damage the pipeline marked (red), and the result (docs/old_photos_look.jpg).

    python tools/old_photos_look.py [--checkpoint demo] [--damage auto] [--shared ../shared/data]
                                    [--out docs/old_photos_look.jpg] [--scales 1,4] [--set damage.KEY=VALUE ...]

``--scales``: each print restored at each of these sizes (× its own, cubic; a larger scan of the
same print), one row per print and scale, all shown at one height.

``--presets``: the presets side by side instead (docs/preset_look.jpg): each print and ``--dev`` dev
photos (their gray; Kodak24 + McMaster, never trained on), one row each: input | ``competition``
(the defaults before presets) | ``photo``. Look for: no green faces, no blue skies on sepia prints,
no grey stripes where a hole was filled.

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
from pipeline.io import list_images

H = 320


def _fit(im: np.ndarray) -> np.ndarray:
    """(h,w[,3]) uint8 -> RGB, H px high."""
    im = Image.fromarray(im).convert("RGB")
    return np.asarray(im.resize((max(1, round(im.width * H / im.height)), H), Image.LANCZOS))


def _row(panels: list) -> np.ndarray:
    """Images side by side, each ``H`` px high, 6 px apart."""
    gap = np.full((H, 6, 3), 255, np.uint8)
    return np.concatenate([x for p in panels for x in (_fit(p), gap)][:-1], 1)


def _marked(pipe, f: Path, scale: float, damage) -> np.ndarray:
    """One print at ``scale``: input | marked damage (red) | result."""
    original = np.asarray(Image.open(f).convert("RGB"))
    if scale != 1:
        original = np.asarray(Image.fromarray(original).resize(
            (round(original.shape[1] * scale), round(original.shape[0] * scale)), Image.BICUBIC))
    t = time.perf_counter()
    r = pipe.restore(original, damage=damage, return_intermediates=True)  # (colour kept as decided)
    seconds = time.perf_counter() - t
    mask = np.asarray(r.mask) > 0
    shown = original.copy()
    shown[mask] = (0.4 * shown[mask] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
    at = f" at {scale:g}x" if scale != 1 else ""
    print(f"{f.name}{at}: {mask.shape[1]}x{mask.shape[0]}, marked {mask.mean():.2%}, {seconds:.2f} s; "
          f"{r.report.damage_why}; {r.report.colour}")
    return _row([original, shown, np.asarray(r.image)])


def _presets(pipe, f: Path, gray: bool) -> np.ndarray:
    """One photo: input | competition | photo."""
    img = Image.open(f).convert("L" if gray else "RGB")
    img.thumbnail((768, 768), Image.LANCZOS)
    src = np.asarray(img)
    outs = [pipe.restore(src, preset=p, return_intermediates=True) for p in ("competition", "photo")]
    print(f"{f.name}: photo preset: {outs[1].report.colour}; damage: {outs[1].report.damage_why}")
    return _row([src] + [np.asarray(o.image) for o in outs])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--damage", default=None, help="auto | shape | scratches (default: the pipeline's)")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "old_photos_look.jpg"))
    ap.add_argument("--scales", default="1", help="comma-separated sizes (× each print) to restore it at")
    ap.add_argument("--presets", action="store_true", help="input | competition | photo, not the damage")
    ap.add_argument("--dev", type=int, default=8, help="--presets: how many dev photos (every 5th)")
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
    if args.presets:
        photos = Path(args.shared) / "photos"
        dev = [p for d in ("kodak24", "mcmaster") if (photos / d).is_dir() for p in list_images(photos / d)]
        rows = [_presets(pipe, f, False) for f in files] + [_presets(pipe, f, True) for f in dev[::5][:args.dev]]
    else:
        rows = [_marked(pipe, f, float(v), args.damage) for f in files for v in args.scales.split(",")]
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    Image.fromarray(grid).save(args.out, quality=85)
    what = "input | competition | photo" if args.presets else "input | marked damage | result"
    print(f"wrote {args.out}: {len(rows)} rows ({what})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
