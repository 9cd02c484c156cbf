"""``python -m pipeline.restore ... --engine ray``: an album restored on a Ray cluster (or a local Ray).

Built on Ray Data, streaming: the list of inputs is split into blocks that a pool of ``--workers``
actors takes in turn; each actor loads the Pipeline once, then for each batch reads its files,
restores them (images of one size together, as the local engine does) and writes their PNGs
atomically into OUT. Reading and writing live in the actor on purpose: separate read/write stages
need task slots beside actors that hold every CPU (a deadlock when one actor holds them all) and
cost ~8 s of worker start-up per run on 2 cores. The driver follows the stream for the progress
bar and the manifest. Inputs, masks,
references and OUT must be on a filesystem every node sees (NFS, a mounted bucket, or one machine).

Ray is an optional extra: ``pip install "restore-pipeline[cluster]"``.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

from .policy import REPORTED

_STARTED = False  # whether ``start`` began the Ray session (``stop`` ends only that one)


def start(address: str | None, cpus: int | None = None):
    """The ``ray`` module with a session: a local Ray (``address`` None) or the cluster at ``address``
    (``auto``: the one this machine belongs to). RuntimeError (one line) without Ray."""
    try:
        import ray
    except ImportError:
        raise RuntimeError('--engine ray needs Ray: pip install "restore-pipeline[cluster]"') from None
    global _STARTED
    if not ray.is_initialized():
        _STARTED = True
        kw = {} if address else {"num_cpus": cpus}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=True, **kw)
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our bar, in images/s
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def stop(ray) -> None:
    """Shut down the Ray session ``start`` began (one the caller began is left running)."""
    global _STARTED
    if _STARTED:
        ray.shutdown()
        _STARTED = False


def _read(row: dict) -> dict:
    """The input's bytes (and its mask's) added to ``row``; OSError names the file."""
    for key, field in (("input", "data"), ("mask", "mask_data")):
        try:
            row[field] = Path(row[key]).read_bytes() if row[key] else b""
        except OSError as e:
            raise OSError(f"{row[key]}: cannot read ({e.strerror or e})") from None
    return row


class Restorer:
    """An actor: the Pipeline loaded once; a batch of inputs in, their PNG bytes and manifest fields out."""

    def __init__(self, checkpoint: str, options: dict, threads: int, out: str):
        import torch

        from .device import select_device
        from .pipeline import Pipeline
        torch.set_num_threads(max(1, threads))
        if options.get("max_pixels"):
            from PIL import Image
            Image.MAX_IMAGE_PIXELS = int(options["max_pixels"])
        self.options, self.out = options, out
        self.pipe = Pipeline.load(checkpoint, device=select_device(options.get("device", "auto")),
                                  **{k: v for k, v in options.items() if k in ("precision", "backend") and v})
        self.refs = None
        if options.get("references"):
            from .references import open_library
            self.refs = open_library(options["references"])

    def _decode(self, row: dict):
        """The local engine's reading (``io.read_input``), from the bytes."""
        from .io import open_bytes, read_input
        mask = open_bytes(row["mask_data"], row["mask"]) if row["mask"] else None
        return read_input(open_bytes(row["data"], row["input"]), mask, row["mask"])

    def __call__(self, batch: dict) -> dict:
        """Inputs (their bytes) -> their manifest rows, the PNGs written."""
        from .io import ImageError
        n = len(batch["input"])
        rows = [{"input": batch["input"][i], "stem": batch["stem"][i], "error": batch["error"][i], "output": "",
                 "size": "", "damage_share": "", "seconds": "", **dict.fromkeys(REPORTED, "")} for i in range(n)]
        decoded = []
        for i, row in enumerate(rows):
            if row["error"]:
                continue
            try:
                decoded.append((i, *self._decode(_read({k: batch[k][i] for k in ("input", "mask")}))))
            except (ImageError, ValueError, OSError) as e:
                row["error"] = str(e).splitlines()[0]
        for items in _by_size(decoded):
            t = time.perf_counter()
            try:
                res = self.pipe.restore_many([g for _, g, _, _ in items], [m for _, _, m, _ in items],
                                             self.options.get("damage"), references=self.refs,
                                             hints=[self.options.get("hints")] * len(items),
                                             colours=[o for *_, o in items],
                                             normalise=bool(self.options.get("normalise")),
                                             keep_colour=self.options.get("keep_colour"),
                                             preset=self.options.get("preset"),
                                             points=[self.options.get("points")] * len(items))
            except Exception as e:  # a failed batch must not lose the others
                for i, *_ in items:
                    rows[i]["error"] = f"{rows[i]['input']}: restore failed ({type(e).__name__}: {e})"
                continue
            seconds = (time.perf_counter() - t) / len(items)
            for (i, g, _, _), r in zip(items, res):
                rows[i].update(size=f"{g.shape[1]}x{g.shape[0]}", seconds=f"{seconds:.3f}",
                               damage_share=f"{sum(r.mask.histogram()[1:]) / g.size:.4f}", **r.report.fields())
                self._write(rows[i], r)
        return {k: [r[k] for r in rows] for k in ("input", "output", "size", "damage_share", "seconds", "error",
                                                  *REPORTED)}

    def _write(self, row: dict, r) -> None:
        """The PNGs of one restoration, written atomically into OUT (as the local engine names them)."""
        from .io import save_png
        dst = Path(self.out) / f"{row['stem']}.png"
        try:
            save_png(r.image, dst)
            if self.options.get("intermediates"):
                save_png(r.mask, dst.with_name(f"{row['stem']}_mask.png"))
                save_png(r.gray, dst.with_name(f"{row['stem']}_gray.png"))
            row["output"] = str(dst)
        except OSError as e:
            row["error"] = f"{dst}: cannot write ({e.strerror or e})"


def _by_size(items: list) -> list:
    groups = defaultdict(list)
    for it in items:
        groups[it[1].shape].append(it)
    return list(groups.values())


def restore_album(ray, items: list[tuple[Path, Path | None]], out: Path, checkpoint: str, options: dict,
                  workers: int | None, batch_size: int, stems: dict | None = None):
    """Yield a manifest row per input as its output lands. ``items``: (input, mask or None);
    ``workers``: restore actors (None: one per CPU of the cluster, GPUs when ``device`` is cuda);
    ``stems``: input -> output stem (``pipeline.restore.output_stems``; default: the input's own)."""
    gpu = str(options.get("device", "auto")).startswith("cuda")
    total = int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1))
    workers = max(1, workers or total)
    threads = 1 if gpu else max(1, int(ray.cluster_resources().get("CPU", 1)) // workers)
    rows = [{"input": str(p), "mask": str(m) if m else "", "stem": (stems or {}).get(p, p.stem), "error": ""}
            for p, m in items]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * workers)))
    ds = ds.map_batches(Restorer, fn_constructor_args=(checkpoint, options, threads, str(out)), batch_size=batch_size,
                        concurrency=workers, num_gpus=1 if gpu else 0, num_cpus=0 if gpu else threads,
                        batch_format="default")
    yield from ds.iter_rows()


