"""An album restored on this machine: inputs read ahead in a background thread (``ReadAhead``),
restored in batches of one size, several batches at once (``Album``), each output named once
(``output_stems``: same stems get ``-2``), written atomically, listed in ``OUT/manifest.csv``, and
zipped (``write_zip``). ``python -m pipeline.restore`` drives it."""
from __future__ import annotations

import csv
import io
import os
import sys
import threading
import time
import zipfile
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .io import ImageError, save_png
from .policy import REPORTED

MANIFEST = ("input", "output", "size", "damage_share", "seconds", "status", "error", *REPORTED)  # OUT/manifest.csv



class Album:
    """Restores images in batches of one size, ``jobs`` batches at once, and writes the PNGs in a
    background thread. Threads suffice: the engines, torch, OpenCV and zlib release the GIL, so one
    batch's pre/post-processing runs beside another's network. A failed image or batch is reported
    on one line and counted; the others go on."""

    def __init__(self, pipe, out: Path, batch_size: int, intermediates: bool, bar, damage: str | None = None,
                 references=None, jobs: int = 1, normalise: bool = False, keep_colour: bool | None = None,
                 preset: str | None = None, points: list | None = None, explain: bool = False):
        self.pipe, self.out, self.batch_size, self.intermediates, self.bar = pipe, out, batch_size, intermediates, bar
        self.points, self.explain = points, explain
        self.damage, self.references, self.jobs, self.normalise = damage, references, max(1, jobs), normalise
        self.keep_colour, self.preset = keep_colour, preset
        self.groups: dict[tuple, list] = defaultdict(list)
        self.workers = ThreadPoolExecutor(max_workers=self.jobs)
        self.running: deque = deque()  # (items, future) of the batches in flight, oldest first
        self.saver = ThreadPoolExecutor(max_workers=1)
        self.saving: list = []
        self.failed = 0
        self.rows: dict[str, dict] = {}  # input -> its manifest row
        self.stems: dict[Path, str] = {}  # input -> its output's stem (``output_stems``), else its own

    def fail(self, message: str, n: int = 1, path=None) -> None:
        print(f"error: {message}", file=sys.stderr)
        self.failed += n
        if path is not None:
            self.note(path, status="failed", error=message)

    def note(self, path, **fields) -> None:
        row = self.rows.setdefault(str(path), dict.fromkeys(MANIFEST, "") | {"input": str(path)})
        row.update(fields)

    def add(self, path: Path, gray, mask, colour=None, hints=None) -> None:
        self.groups[gray.shape].append((path, gray, mask, colour, hints))
        if len(self.groups[gray.shape]) >= max(1, self.batch_size):
            self.flush(gray.shape)

    def _save(self, r, stem: str) -> None:
        save_png(r.image, self.out / f"{stem}.png")
        if self.intermediates:
            save_png(r.mask, self.out / f"{stem}_mask.png")
            save_png(r.gray, self.out / f"{stem}_gray.png")

    def _restore(self, items) -> tuple[list, float]:
        """The batch's results and its seconds per image (while it ran)."""
        t = time.perf_counter()
        paths, grays, masks, colours, hints = zip(*items)
        results = self.pipe.restore_many(list(grays), list(masks), self.damage, references=self.references,
                                         hints=list(hints), colours=list(colours), normalise=self.normalise,
                                         keep_colour=self.keep_colour, preset=self.preset,
                                         points=[self.points] * len(items))
        return results, (time.perf_counter() - t) / len(items)

    def flush(self, key) -> None:
        """Start restoring the group ``key``; collect the oldest batches beyond ``jobs`` in flight."""
        items = self.groups.pop(key, [])
        if items:
            self.running.append((items, self.workers.submit(self._restore, items)))
        keep = self.jobs - 1 if items else 0  # flush(None): wait for every batch
        while len(self.running) > keep:
            self._collect(*self.running.popleft())

    def _collect(self, items, job) -> None:
        try:
            results, seconds = job.result()
        except Exception as e:  # a failure of one batch must not lose the others
            for p, *_ in items:
                self.fail(f"{p}: restore failed ({type(e).__name__}: {e})", path=p)
            self.bar.update(len(items))
            return
        for (p, g, *_), r in zip(items, results):
            stem = self.stems.get(p, p.stem)
            dst = self.out / f"{stem}.png"
            self.note(p, output=str(dst), size=f"{g.shape[1]}x{g.shape[0]}", seconds=f"{seconds:.3f}",
                      damage_share=f"{sum(r.mask.histogram()[1:]) / g.size:.4f}",
                      status="restored", **r.report.fields())
            if self.explain:
                print(f"{p}:\n  " + "\n  ".join(r.report.lines()), flush=True)
            self.saving.append((dst, self.saver.submit(self._save, r, stem), p))
        self.bar.update(len(items))

    def finish(self) -> list[Path]:
        """Restore what is left, wait for the writes; returns the PNGs written."""
        for key in list(self.groups):
            self.flush(key)
        self.flush(None)  # the batches still in flight
        self.workers.shutdown()
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
        w = csv.DictWriter(buf, fieldnames=list(MANIFEST))
        w.writeheader()
        w.writerows(self.rows.values())
        atomic_write_bytes(self.out / "manifest.csv", buf.getvalue().encode())
        return self.out / "manifest.csv"


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each later repeat (case aside: unpacked on Windows or macOS they collide too)
    given a suffix before its extension: ``same.png``, ``same-2.png``, ``same-3.png``."""
    taken, out = set(), []
    for name in names:
        stem, ext = os.path.splitext(name)
        cand, k = name, 2
        while cand.casefold() in taken:
            cand, k = f"{stem}-{k}{ext}", k + 1
        taken.add(cand.casefold())
        out.append(cand)
    return out


def output_stems(paths: list[Path], earlier: dict[str, str] | None = None) -> dict[Path, str]:
    """Each input's output stem: its own, and ``stem-2``, ``stem-3`` ... for a later input of the
    same stem (only same stems collide: competition names are unique and unchanged). ``earlier``:
    input -> output of a previous run (its manifest): those inputs keep their names, and no other
    input takes one of them."""
    earlier = earlier or {}
    out = {p: Path(earlier[str(p)]).stem for p in paths if earlier.get(str(p))}
    taken = {Path(o).stem.casefold() for o in earlier.values() if o}
    for p in paths:
        if p not in out:
            cand, k = p.stem, 2
            while cand.casefold() in taken:
                cand, k = f"{p.stem}-{k}", k + 1
            out[p] = cand
        taken.add(out[p].casefold())
    return out


def earlier_outputs(out: Path) -> dict[str, str]:
    """``OUT/manifest.csv`` of an earlier run: input -> output, for the inputs it restored or skipped."""
    try:
        with open(out / "manifest.csv", newline="") as f:
            return {r["input"]: r["output"] for r in csv.DictReader(f)
                    if r.get("status") in ("restored", "skipped") and r.get("output")}
    except (OSError, KeyError, csv.Error):
        return {}


def names_for(paths: list[Path], out: Path, skip_existing: bool) -> tuple[dict, list]:
    """(each input's output stem, the inputs whose output exists: with ``skip_existing``, as the
    earlier run's manifest maps them, else as ``output_stems`` names them)."""
    stems = output_stems(paths, earlier_outputs(out) if skip_existing else None)
    return stems, [p for p in paths if skip_existing and (out / f"{stems[p]}.png").is_file()]


def write_zip(zpath: Path, files: list[Path]) -> None:
    """A flat zip of ``files`` (stored: PNGs are compressed already), written atomically; names
    kept as they are (``zipfile`` flags a non-ASCII name as UTF-8), a repeated one suffixed."""
    zpath.parent.mkdir(parents=True, exist_ok=True)
    tmp = zpath.with_suffix(zpath.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for f, name in zip(files, unique_names([f.name for f in files])):
            z.write(f, arcname=name)
    tmp.replace(zpath)


class ReadAhead:
    """Reads the inputs in a background thread, in order, at most ``most`` images and about
    ``pixels`` pixels ahead of the restore: decoding (which releases the GIL) runs while torch
    loads and beside the networks, and a long album holds little in memory. Iterating yields
    ``(path, (gray, mask, own colour) or None, error line or None)``."""

    def __init__(self, read, paths: list, most: int = 256, pixels: int = 64_000_000):
        self._read, self._most, self._pixels = read, most, pixels
        self._ready: deque = deque()
        self._held, self._done, self._stop, self._crash = 0, False, False, None
        self._cv = threading.Condition()
        threading.Thread(target=self._run, args=(paths,), daemon=True, name="read-ahead").start()

    def _room(self) -> bool:
        return self._stop or not self._ready or (len(self._ready) < self._most and self._held < self._pixels)

    def _run(self, paths: list) -> None:
        try:
            for p in paths:
                with self._cv:
                    self._cv.wait_for(self._room)
                    if self._stop:
                        return
                try:
                    data, err = self._read(p), None
                    size = data[0].size * (4 if data[2] is not None else 1)
                except ImageError as e:
                    data, err, size = None, str(e), 0
                with self._cv:
                    self._ready.append((p, data, err, size))
                    self._held += size
                    self._cv.notify_all()
        except BaseException as e:  # a bug, not a bad input: raised where the album reads
            self._crash = e
        finally:
            with self._cv:
                self._done = True
                self._cv.notify_all()

    def __iter__(self):
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._ready or self._done)
                if not self._ready:
                    if self._crash is not None:
                        raise self._crash
                    return
                p, data, err, size = self._ready.popleft()
                self._held -= size
                self._cv.notify_all()
            yield p, data, err

    def close(self) -> None:
        """Stop reading (the album ended early)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
