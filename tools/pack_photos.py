"""Write a compact copy of photo folders (longer side <= --max-side, JPEG) for a machine that
gets the working tree only (a lent GPU: the tree that travels is at most 64 MiB).

    python tools/pack_photos.py ../shared/data/photos/{bsds500,imagenet_sample,camvid,imagen,osie,road_imagenet,scenes} \\
        --out photos_small --max-side 224 --quality 75

Each source folder becomes ``OUT/<folder name>/`` with the same relative paths (``.jpg``), so the
split groups (``data.group_pattern``) and the held-out split by file order stay the same. Never pack
the dev benchmark (kodak24, mcmaster). Prints the file count and total size.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from pipeline.io import ImageError, list_images, to_rgb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-side", type=int, default=224)
    ap.add_argument("--quality", type=int, default=75)
    args = ap.parse_args()
    out, n, total, bad = Path(args.out), 0, 0, 0
    for root in map(Path, args.roots):
        if root.name in ("kodak24", "mcmaster"):
            print(f"error: {root}: the dev benchmark is never packed for training", file=sys.stderr)
            return 2
        for f in list_images(root):
            try:
                im = Image.fromarray(to_rgb(f))
            except ImageError as e:
                print(f"skipping {e}", file=sys.stderr)
                bad += 1
                continue
            im.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
            dst = (out / root.name / Path(f).relative_to(root)).with_suffix(".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            im.save(dst, quality=args.quality)
            n, total = n + 1, total + dst.stat().st_size
    print(f"{n} photos, {total / 2**20:.1f} MiB in {out}" + (f" ({bad} unreadable, skipped)" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
