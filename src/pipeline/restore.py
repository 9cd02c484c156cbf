"""Restore images from the command line.

    python -m pipeline.restore INPUTS... --checkpoint demo --out results/ [--zip submission.zip]

INPUTS are image files, folders (recursive) or a competition ``test.csv``. Each output is a PNG
named like its input (``TEST_000.png``), written atomically; ``--zip`` also writes a flat zip ready
to submit. A bad input is reported on stderr in one line and skipped; the exit status is then 1.
Every run writes ``OUT/manifest.csv`` (input, output, size, damage share, seconds, status, error,
and the restore's report: preset, damage rule, colour, reference).
``--skip-existing`` resumes an interrupted album: inputs whose output exists are skipped (a
half-written PNG of a killed run never has the output's name, so it never counts as done).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .album import Album, ReadAhead, names_for, write_zip
from .io import IMAGE_EXTS, ImageError, list_images, read_input, read_pairs_csv
from .policy import COLOURS, PRESETS


def collect_inputs(items: list[str]) -> tuple[list[Path], list[str]]:
    """Expand files, folders and csv files into image paths; returns (paths, error lines)."""
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
    ap.add_argument("--jobs", type=int, default=None,
                    help="batches restored at once (default on a CPU: one per core plus one, each network on "
                         "one thread, for an album of several batches; else 1): one batch's pre/post-processing "
                         "runs beside another's network")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 | auto (default: the checkpoint's)")
    ap.add_argument("--backend", default=None, help="torch | openvino | onnx | auto (default: the checkpoint's)")
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="allow images up to this many pixels (default: Pillow's decompression-bomb limit)")
    ap.add_argument("--damage", default=None, metavar="KIND",
                    help="what to detect: shape (one constant-gray shape: competition inputs), scratches "
                         "(old photos: scratches, cracks, spots, tears), auto (default: the checkpoint's), none "
                         "(only what --select or --mask gives)")
    ap.add_argument("--references", metavar="DIR_OR_INDEX",
                    help="photos of the same scenes: a folder (indexed once, cached) or an index from "
                         "python -m pipeline.references build; a verified match gives the hole's content and colour")
    ap.add_argument("--colour", choices=tuple(COLOURS), default="auto",
                    help="keep the input's own colour or tone and repair only the damage (keep), colour it anew "
                         "from its gray (recolour), or decide (auto: a colour photo keeps its colour; with the "
                         "photo preset a toned print such as a sepia one keeps its tone)")
    ap.add_argument("--preset", choices=PRESETS, default=None,
                    help="competition: the settings chosen on the DACON metric; photo: for people (tones kept, "
                         "holes coloured like their surroundings, full colour); auto: competition for an input "
                         "holding a competition shape, else photo (default: the checkpoint's, auto)")
    ap.add_argument("--normalise", action="store_true",
                    help="a faded print: spread its restored gray's tones again (only where their range has "
                         "shrunk; off: the gray stays the input's, as a competition needs)")
    ap.add_argument("--select", action="append", default=[], metavar="X,Y",
                    help="a click on damage at pixel X,Y (one input; repeatable): what it lies on is repaired "
                         "too (with --damage none, only that)")
    ap.add_argument("--explain", action="store_true",
                    help="print, per input, which preset and damage rule decided and why, and the colour")
    ap.add_argument("--hint", action="append", default=[], metavar="X,Y,#RRGGBB",
                    help="a colour known at pixel X,Y (one input; repeatable), for a colorizer with hint channels")
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: this process; ray: a Ray cluster (Ray Data, an actor pool; pip install "
                         "'restore-pipeline[cluster]')")
    ap.add_argument("--address", default=None,
                    help="--engine ray: the cluster to join (auto: the one this machine belongs to; "
                         "default: start a local Ray)")
    ap.add_argument("--workers", type=int, default=None,
                    help="--engine ray: restore actors, each with the Pipeline loaded once (default: one per CPU, "
                         "or per GPU with --device cuda)")
    ap.add_argument("--skip-existing", action="store_true",
                    help="skip inputs whose output PNG exists (resume an interrupted album)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _hints(texts: list[str], inputs: int):
    """``--hint X,Y,#RRGGBB`` (or ``X,Y,R,G,B``) items -> a ``stages.Hints`` (None: no hints)."""
    if not texts:
        return None
    from stages.processors import Hints
    if inputs > 1:  # (none: each missing input has said so already)
        raise ValueError(f"--hint: colour hints apply to one input, got {inputs}")
    items = []
    for t in texts:
        parts = t.split(",")
        if len(parts) not in (3, 5):
            raise ValueError(f"--hint {t}: expected X,Y,#RRGGBB or X,Y,R,G,B")
        items.append((parts[0], parts[1], parts[2] if len(parts) == 3 else parts[2:]))
    return Hints.of(items)


def _mask_of(args, p: Path, n: int) -> Path | None:
    return find_mask(args.mask, p) if n > 1 or not args.mask or Path(args.mask).is_dir() else Path(args.mask)


def _engine(args, n: int):
    """What restores: ``(pipeline, library, hints)`` for the local engine, ``(ray, None, hints)``
    for ``--engine ray``; ValueError/RuntimeError/CheckpointError (one line) when it cannot."""
    import stages  # noqa: F401  (torch loads here, while the inputs are read)
    hints = _hints(args.hint, n)
    if args.engine == "ray":
        from . import cluster
        from .pipeline import resolve_checkpoint
        resolve_checkpoint(args.checkpoint)
        if args.references:  # a folder is indexed here once; the workers read the cached index
            from .references import open_library
            open_library(args.references)
        return cluster.start(args.address), None, hints
    from .device import select_device
    from .pipeline import Pipeline
    opts = {k: v for k, v in (("precision", args.precision), ("backend", args.backend)) if v}
    pipe = Pipeline.load(args.checkpoint, device=select_device(args.device), **opts)
    refs = None
    if args.references:
        from .references import open_library
        refs = open_library(args.references)
    return pipe, refs, hints


def _check_damage(ap: argparse.ArgumentParser, damage: str | None) -> None:
    """``--damage``: one of the detector's kinds or ``none``, checked once stages has loaded
    (argparse's ``choices`` would load it before any input is read)."""
    from stages.processors import KINDS
    if damage is not None and damage not in (*KINDS, "none"):
        ap.error(f"argument --damage: invalid choice: {damage!r} (choose from {', '.join(KINDS)}, none)")


def _points(texts: list[str], inputs: int) -> list | None:
    """``--select X,Y`` items -> ``[(x, y), ...]`` (None: none); ValueError (one line) when unusable."""
    if not texts:
        return None
    if inputs > 1:
        raise ValueError(f"--select: clicks apply to one input, got {inputs}")
    out = []
    for t in texts:
        try:
            x, y = (float(v) for v in t.split(","))
        except ValueError:
            raise ValueError(f"--select {t}: expected X,Y (pixels)") from None
        out.append((x, y))
    return out


def _jobs(args, pipe, n: int) -> tuple[int, int | None]:
    """(batches restored at once, torch threads or None: unchanged). On a CPU, an album of several
    batches defaults to one batch per core plus one, each network on one thread: the cores stay
    busy through every batch's single-threaded pre/post-processing (120 inputs on 2 cores: 11.2 s
    against 12.2 with two batches of two threads each, benchmarks/album_speed.py)."""
    if args.jobs is not None or args.engine == "ray":
        return max(1, args.jobs or 1), None
    if pipe.device.type != "cpu" or n <= max(1, args.batch_size):
        return 1, None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1, 1


def _restore_local(album, reader: ReadAhead, hints) -> list[Path]:
    for p, data, err in reader:  # restored in batches of one size as they arrive
        if err is not None:
            album.fail(err, path=p)
            album.bar.update(1)
            continue
        album.add(p, *data, hints)
    return album.finish()


def _restore_ray(args, album, ray, todo: list[Path], n: int, hints) -> list[Path]:
    from .cluster import restore_album, stop
    options = {"device": args.device, "precision": args.precision, "backend": args.backend, "damage": args.damage,
               "references": args.references, "keep_colour": COLOURS[args.colour], "hints": hints,
               "preset": args.preset, "points": _points(args.select, n),
               "intermediates": args.save_intermediates, "max_pixels": args.max_pixels, "normalise": args.normalise}
    written = []
    try:
        for row in restore_album(ray, [(p, _mask_of(args, p, n)) for p in todo], album.out, args.checkpoint,
                                 options, args.workers, args.batch_size, stems=album.stems):
            if row["error"]:
                album.fail(row["error"], path=Path(row["input"]))
            else:
                album.note(Path(row["input"]), status="restored", **{k: v for k, v in row.items() if k != "input"})
                written.append(Path(row["output"]))
            album.bar.update(1)
    finally:
        album.bar.close()
        stop(ray)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.restore``; returns the exit status (0 ok, 1 some input failed, 2 usage)."""
    ap = _parser()
    args = ap.parse_args(argv)
    if args.max_pixels:
        from PIL import Image
        Image.MAX_IMAGE_PIXELS = int(args.max_pixels)
    from tqdm.auto import tqdm

    paths, errors = collect_inputs(args.inputs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    out = Path(args.out)
    stems, done = names_for(paths, out, args.skip_existing)
    todo = [p for p in paths if p not in set(done)]
    reader = None
    if args.engine == "local":  # start reading while torch and the pipeline load
        def read(p: Path) -> tuple:
            mp = _mask_of(args, p, len(paths))
            return read_input(p, mp, str(mp))
        reader = ReadAhead(read, todo)
    try:
        engine, refs, hints = _engine(args, len(paths))
        _check_damage(ap, args.damage)
        points = _points(args.select, len(paths))
    except BaseException as e:
        if reader is not None:
            reader.close()
        if isinstance(e, (RuntimeError, ValueError)):  # (a CheckpointError is a ValueError)
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(todo), disable=args.no_progress, desc="restore", unit="img", file=sys.stderr)
    jobs, threads = _jobs(args, engine, len(todo))
    album = Album(engine, out, args.batch_size, args.save_intermediates, bar, args.damage, refs, jobs,
                   args.normalise, COLOURS[args.colour], args.preset, points, args.explain)
    album.failed, album.stems = len(errors), stems
    for p in done:
        album.note(p, output=str(out / f"{stems[p]}.png"), status="skipped")
    if done:
        print(f"skipped {len(done)} input(s) whose output exists in {out}", file=sys.stderr)
    if args.engine == "ray":
        written = _restore_ray(args, album, engine, todo, len(paths), hints)
    else:
        import torch
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            written = _restore_local(album, reader, hints)
        finally:
            reader.close()
            torch.set_num_threads(before)  # main() may be called in a longer process
    album.write_manifest()
    outputs = written + [out / f"{stems[p]}.png" for p in done]
    if args.zip and outputs:
        write_zip(Path(args.zip), outputs)
    print(f"restored {len(written)} image(s) into {out}" + (f", zip {args.zip}" if args.zip and outputs else "")
          + (f"; {album.failed} failed" if album.failed else ""), file=sys.stderr)
    return 1 if album.failed else 0


def run() -> None:
    """``python -m pipeline.restore``: ``main()``, then exit without Python's teardown, which
    unloads torch and OpenVINO for ~0.5 s; every output is written and closed by then."""
    rc = main()
    import logging
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
