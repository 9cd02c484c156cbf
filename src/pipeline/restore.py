"""Restore images from the command line.

    python -m pipeline.restore INPUTS... --checkpoint demo --out results/ [--zip submission.zip]

INPUTS are image files, folders (recursive) or a competition ``test.csv``. Each output is a PNG
named like its input (``TEST_000.png``), written atomically; ``--zip`` also writes a flat zip ready
to submit. A bad input is reported on stderr in one line and skipped; the exit status is then 1.
Every run writes ``OUT/manifest.csv`` (input, output, size, damage share, seconds, status, error).
``--skip-existing`` resumes an interrupted album: inputs whose output exists are skipped (a
half-written PNG of a killed run never has the output's name, so it never counts as done).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stages.processors import KINDS

from .io import IMAGE_EXTS, ImageError, list_images, save_png, to_gray, to_mask


def collect_inputs(items: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders and csv files into image paths; returns (paths, error lines)."""
    from .data import read_pairs_csv
    paths, errors = [], []
    for it in items:
        p = Path(it)
        if p.suffix.lower() == ".csv" and p.is_file():
            try:
                paths += [r[0] for r in read_pairs_csv(p)]
            except (ValueError, FileNotFoundError) as e:
                errors.append(str(e))
        elif p.is_dir():
            found = list_images(p)
            if not found:
                errors.append(f"{p}: folder holds no images ({', '.join(IMAGE_EXTS)})")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            errors.append(f"{p}: no such file or folder")
    return paths, errors


def find_mask(mask_arg: str | None, img: Path) -> Path | None:
    """The mask for ``img`` named by ``--mask``: a file, or a folder holding one of the same name."""
    if not mask_arg:
        return None
    m = Path(mask_arg)
    if m.is_dir():
        for cand in [m / img.name, *(m / (img.stem + e) for e in IMAGE_EXTS)]:
            if cand.is_file():
                return cand
        raise ImageError(f"{img}: no mask named {img.stem}.* in {m}")
    return m


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pipeline.restore", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="image files, folders (recursive) or a competition test.csv")
    ap.add_argument("--checkpoint", default="demo", help="Pipeline folder or shipped name (default: demo)")
    ap.add_argument("--out", required=True, help="output folder for the restored PNGs")
    ap.add_argument("--zip", help="also write a flat zip of the outputs (a submission file)")
    ap.add_argument("--mask", help="a mask file (one input) or a folder of masks named like the inputs")
    ap.add_argument("--save-intermediates", action="store_true", help="also write NAME_mask.png, NAME_gray.png")
    ap.add_argument("--batch-size", type=int, default=4, help="images of one size restored together")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 | auto (default: the checkpoint's)")
    ap.add_argument("--backend", default=None, help="torch | openvino | onnx | auto (default: the checkpoint's)")
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="allow images up to this many pixels (default: Pillow's decompression-bomb limit)")
    ap.add_argument("--damage", choices=KINDS, default=None,
                    help="what to detect: shape (one constant-gray shape: competition inputs), scratches "
                         "(old photos: scratches, cracks, spots, tears), auto (default: the checkpoint's)")
    ap.add_argument("--references", metavar="DIR_OR_INDEX",
                    help="photos of the same scenes: a folder (indexed once, cached) or an index from "
                         "python -m pipeline.references build; a verified match gives the hole's content and colour")
    ap.add_argument("--skip-existing", action="store_true",
                    help="skip inputs whose output PNG exists (resume an interrupted album)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


class _Album:
    """Restores images in batches of one size and writes the PNGs in a background thread (zlib
    releases the GIL, so encoding overlaps the next batch). A failed image or batch is reported
    on one line and counted; the others go on."""

    def __init__(self, pipe, out: Path, batch_size: int, intermediates: bool, bar, damage: str | None = None,
                 references=None):
        self.pipe, self.out, self.batch_size, self.intermediates, self.bar = pipe, out, batch_size, intermediates, bar
        self.damage, self.references = damage, references
        self.groups: dict[tuple, list] = defaultdict(list)
        self.saver = ThreadPoolExecutor(max_workers=1)
        self.saving: list = []
        self.failed = 0
        self.rows: dict[str, dict] = {}  # input -> its manifest row

    def fail(self, message: str, n: int = 1, path=None) -> None:
        print(f"error: {message}", file=sys.stderr)
        self.failed += n
        if path is not None:
            self.note(path, status="failed", error=message)

    def note(self, path, **fields) -> None:
        row = self.rows.setdefault(str(path), {"input": str(path), "output": "", "size": "", "damage_share": "",
                                               "seconds": "", "status": "", "error": ""})
        row.update(fields)

    def add(self, path: Path, gray, mask) -> None:
        self.groups[gray.shape].append((path, gray, mask))
        if len(self.groups[gray.shape]) >= max(1, self.batch_size):
            self.flush(gray.shape)

    def _save(self, r, stem: str) -> None:
        save_png(r.image, self.out / f"{stem}.png")
        if self.intermediates:
            save_png(r.mask, self.out / f"{stem}_mask.png")
            save_png(r.gray, self.out / f"{stem}_gray.png")

    def flush(self, key) -> None:
        items = self.groups.pop(key, [])
        if not items:
            return
        t = time.perf_counter()
        try:
            results = self.pipe.restore_many([g for _, g, _ in items], [m for _, _, m in items], self.damage,
                                             references=self.references)
        except Exception as e:  # a failure of one batch must not lose the others
            for p, _, _ in items:
                self.fail(f"{p}: restore failed ({type(e).__name__}: {e})", path=p)
            self.bar.update(len(items))
            return
        seconds = (time.perf_counter() - t) / len(items)
        for (p, g, _), r in zip(items, results):
            dst = self.out / f"{p.stem}.png"
            self.note(p, output=str(dst), size=f"{g.shape[1]}x{g.shape[0]}", seconds=f"{seconds:.3f}",
                      damage_share=f"{sum(r.mask.histogram()[1:]) / g.size:.4f}",
                      status="restored")
            self.saving.append((dst, self.saver.submit(self._save, r, p.stem), p))
        self.bar.update(len(items))

    def finish(self) -> list[Path]:
        """Restore what is left, wait for the writes; returns the PNGs written."""
        for key in list(self.groups):
            self.flush(key)
        self.bar.close()
        written = []
        for dst, job, src in self.saving:
            try:
                job.result()
                written.append(dst)
            except Exception as e:  # one unwritable output must not lose the others
                self.fail(f"{dst}: cannot write ({type(e).__name__}: {e})", path=src)
        self.saver.shutdown()
        return written

    def write_manifest(self) -> Path:
        """``OUT/manifest.csv``: one row per input of this run (restored, skipped or failed)."""
        from stages.registry import atomic_write_bytes
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["input", "output", "size", "damage_share", "seconds", "status", "error"])
        w.writeheader()
        w.writerows(self.rows.values())
        atomic_write_bytes(self.out / "manifest.csv", buf.getvalue().encode())
        return self.out / "manifest.csv"


def _write_zip(zpath: Path, files: list[Path]) -> None:
    """A flat zip of ``files`` (stored: PNGs are compressed already), written atomically."""
    zpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = zpath.with_suffix(zpath.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for f in files:
            z.write(f, arcname=f.name)
    tmp.replace(zpath)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.restore``; returns the exit status (0 ok, 1 some input failed, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.max_pixels:
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = int(args.max_pixels)
    from tqdm.auto import tqdm

    from stages import CheckpointError

    from .device import select_device
    from .pipeline import Pipeline

    paths, errors = collect_inputs(args.inputs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    try:
        opts = {k: v for k, v in (("precision", args.precision), ("backend", args.backend)) if v}
        pipe = Pipeline.load(args.checkpoint, device=select_device(args.device), **opts)
        refs = None
        if args.references:
            from .references import open_library
            refs = open_library(args.references)
    except (CheckpointError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = [p for p in paths if args.skip_existing and (out / f"{p.stem}.png").is_file()]
    todo = [p for p in paths if p not in set(done)]
    bar = tqdm(total=len(todo), disable=args.no_progress, desc="restore", unit="img", file=sys.stderr)
    album = _Album(pipe, out, args.batch_size, args.save_intermediates, bar, args.damage, refs)
    album.failed = len(errors)
    for p in done:
        album.note(p, output=str(out / f"{p.stem}.png"), status="skipped")
    if done:
        print(f"skipped {len(done)} input(s) whose output exists in {out}", file=sys.stderr)
    for p in todo:  # read lazily, restored in batches of one size
        try:
            gray = to_gray(p)
            mp = find_mask(args.mask, p) if len(paths) > 1 or not args.mask or Path(args.mask).is_dir() else Path(args.mask)
            mask = to_mask(mp, gray.shape, name=str(mp)) if mp is not None else None
        except ImageError as e:
            album.fail(str(e), path=p)
            bar.update(1)
            continue
        album.add(p, gray, mask)
    written = album.finish()
    album.write_manifest()
    outputs = written + [out / f"{p.stem}.png" for p in done]
    if args.zip and outputs:
        _write_zip(Path(args.zip), outputs)
    print(f"restored {len(written)} image(s) into {out}" + (f", zip {args.zip}" if args.zip and outputs else "")
          + (f"; {album.failed} failed" if album.failed else ""), file=sys.stderr)
    return 1 if album.failed else 0


if __name__ == "__main__":
    sys.exit(main())
