"""The pipeline behind the app (``pipeline.app``): uploads in, restorations out, one restore at a
time (``Restorer``), the form fields checked with one-line errors, PNGs and zips out."""
import base64
import hashlib
import io
import json
import sys
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from stages.processors import KINDS as DAMAGE_KINDS
from stages.processors import Hints

from .io import ImageError, open_bytes, to_gray, to_mask
from .policy import COLOURS as COLOUR, PRESETS

MAX_UPLOAD_MB = 200
PREVIEW_PX = 2048  # /api/preview's largest side
WAITING = "Finishing the previous photo…"
WARMING = "Preparing the models (first photo only)…"
SELECT = (0.5, 0.45)  # a click selects at probability 0.5 - 0.45 × sensitivity (0..1: more of the suggested damage)
DAMAGE = (*DAMAGE_KINDS, "none")  # none: only the clicks' selection


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(img)).decode()


def zip_bytes(files: list) -> bytes:
    """``[(name, bytes), ...]`` -> a stored zip (PNGs are compressed already); names made unique
    (``pipeline.album.unique_names``), UTF-8 flagged by ``zipfile`` where not ASCII."""
    from .album import unique_names
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, (_, data) in zip(unique_names([Path(n).name or "photo.png" for n, _ in files]), files):
            z.writestr(name, data)
    return buf.getvalue()


class Restorer:
    """The pipeline behind the app: uploads in, restorations out, one request at a time; the
    stage each request (by its token) is at, for the page's progress line."""

    def __init__(self, pipe, max_upload_mb: float = MAX_UPLOAD_MB):
        self.pipe, self.max_bytes, self.max_mb = pipe, int(max_upload_mb * 2 ** 20), max_upload_mb
        self.lock = threading.Lock()
        self.ready = threading.Event()  # set once the models are warm (or no warm-up was asked for)
        self.stages: OrderedDict = OrderedDict()  # token -> the stage its request is at (the latest 256)
        self._refs: tuple = (None, None, None, {})  # digest, Library, folder, {stored name: uploaded name}

    def stage(self, token: Optional[str], line: str) -> None:
        """Note the stage ``token``'s request is at (the page polls ``/api/progress/{token}``)."""
        if token:
            self.stages[token] = line
            self.stages.move_to_end(token)
            while len(self.stages) > 256:
                self.stages.popitem(last=False)

    def held(self, token: Optional[str]):
        """The lock, saying meanwhile why the request waits (the warm-up, or the previous photo)."""
        if self.lock.locked():
            self.stage(token, WAITING if self.ready.is_set() else WARMING)
        return self.lock

    def warm_up(self) -> None:
        """Restore two small photos (a gray one with a crack: ``photo``; one with a competition
        shape: ``competition``) so that the first real photo finds every engine ready."""
        try:
            gray, square = np.tile(np.linspace(40, 220, 96, dtype=np.uint8), (96, 1)), np.zeros((96, 96), bool)
            gray[40:44, 10:80], square[30:50, 30:50] = 250, True
            with self.lock:
                self.pipe.restore(gray)
                self.pipe.restore(np.where(square, 50, gray).astype(np.uint8), mask=square)
        except Exception as e:  # a failed warm-up only means the first photo waits longer
            print(f"warning: warm-up failed ({type(e).__name__}: {e})", file=sys.stderr)
        finally:
            self.ready.set()

    def _too_big(self, name: str, size: int) -> ImageError:
        need = int(np.ceil(size / 2 ** 20 / 50) * 50)
        return ImageError(f"{name}: upload of {size / 2 ** 20:.1f} MB is over the {self.max_mb:g} MB limit; start the "
                          f"app with --max-upload-mb {need} to take it, or choose a smaller file.")

    def references(self, uploads: list):
        """Uploaded reference photos -> a ``Library`` (None for none), indexed once per set of files.
        A file that is no usable colour photo is left out (it cannot be a reference)."""
        uploads = [(n, d) for n, d in uploads if d]
        if not uploads:
            return None
        digest = hashlib.sha256(b"".join(hashlib.sha256(d).digest() for _, d in uploads)).hexdigest()
        if self._refs[0] != digest:
            from .references import Library
            tmp = tempfile.TemporaryDirectory(prefix="restore-refs-")  # kept while these are the references
            names = {}
            for i, (name, data) in enumerate(uploads):
                if len(data) > self.max_bytes:
                    raise self._too_big(name, len(data))
                stored = f"{i:04d}{Path(name).suffix.lower() or '.png'}"
                (Path(tmp.name) / stored).write_bytes(data)
                names[stored] = Path(name).name
            if self._refs[2] is not None:  # the previous set's folder
                self._refs[2].cleanup()
            self._refs = (digest, Library.build([tmp.name]), tmp, names)
        return self._refs[1]

    def read(self, data: bytes, name: str) -> Image.Image:
        """Upload bytes -> a loaded PIL image; ``ImageError`` (one line) when unusable."""
        if not data:
            raise ImageError(f"{name}: empty upload")
        if len(data) > self.max_bytes:
            raise self._too_big(name, len(data))
        try:
            return open_bytes(data, name)
        except ImageError as e:
            if "image too large" not in str(e):
                raise
            limit = Image.MAX_IMAGE_PIXELS or 0
            raise ImageError(f"{name}: too large for this page (at most {limit / 1e6:.1f} million pixels); start the "
                             "app with --max-pixels to allow larger photos") from None

    def restore(self, image: bytes, mask: Optional[bytes] = None, saturation: Optional[float] = None,
                damage: Optional[str] = None, references: Optional[list] = None, colour: Optional[str] = None,
                hints: Optional[str] = None, normalise: bool = False, preset: Optional[str] = None,
                token: Optional[str] = None, both: bool = False, points: Optional[str] = None,
                sensitivity: Optional[float] = None):
        """-> ``(Restoration, colourised Restoration or None)``; raises ``ImageError``/``ValueError``
        for a bad request. ``colour``: ``auto``, ``keep`` or ``recolour`` (``pipeline.policy.COLOURS``);
        ``preset``: ``pipeline.policy.PRESETS``; ``hints``: JSON ``[[x, y, "#rrggbb"], ...]``;
        ``normalise``: a faded print's tones spread again. ``both``: a toned print that kept its
        tone (``colour`` auto) is also colourised, with the same mask. ``points``: JSON ``[[x, y], ...]``,
        clicks on damage, repaired too (at ``sensitivity``, 0..1, where given: ``select``)."""
        self.stage(token, "Reading the photo…")
        im = self.read(image, "image")
        m = to_mask(self.read(mask, "mask"), (im.height, im.width), name="mask upload") if mask else None
        if colour not in (None, *COLOUR):
            raise ValueError(f"colour: must be one of {', '.join(COLOUR)}, got {colour!r}")
        if preset not in (None, *PRESETS):
            raise ValueError(f"preset: must be one of {', '.join(PRESETS)}, got {preset!r}")
        hints = _hints(hints) if hints else None
        _damage(damage)
        pts, sens = _points(points, (im.height, im.width)), _sensitivity(sensitivity)
        if saturation is not None and not 0 <= saturation <= 2:
            raise ValueError(f"saturation: must be within 0..2, got {saturation}")
        opts = dict(return_intermediates=True, damage=damage, hints=hints, normalise=bool(normalise),
                    saturation=None if saturation is None else float(saturation))
        with self.held(token):  # one restore at a time: the engines and their caches are shared
            refs = self.references(references or [])
            self.stage(token, "Repairing and colouring…" if m is not None else "Looking for damage, then repairing…")
            why = None
            if pts and sens is not None:  # the clicks at this sensitivity: selected here, given as the mask
                m, why = self._mask(to_gray(im), damage, pts, sens, m)
                pts = None
            res = self.pipe.restore(im, mask=m, references=refs, keep_colour=COLOUR.get(colour), preset=preset,
                                    points=pts, **opts)
            if why and res.report is not None:
                res.report.damage, res.report.damage_why = why
            self._name_reference(res.report)
            alt = None
            if both and COLOUR.get(colour) is None and "own tone" in res.report.colour:
                self.stage(token, "Colourising it too, to compare…")
                alt = self.pipe.restore(im, mask=np.asarray(res.mask) > 0, references=refs, keep_colour=False,
                                        preset=res.report.preset, **opts)
        self.stage(token, "Done.")
        return res, alt

    def _name_reference(self, report) -> None:
        """The matched reference by the name it was uploaded with (they are stored as 0000.png ...)."""
        ref = report.reference if report is not None else None
        if ref and ref.get("name"):
            ref["name"] = self._refs[3].get(ref["name"], ref["name"])

    def detect(self, image: bytes, damage: Optional[str] = None, token: Optional[str] = None,
               points: Optional[str] = None, sensitivity: Optional[float] = None) -> tuple:
        """-> (the mask (L, 255 = damaged) the detector finds, plus what the clicks ``points`` select,
        ``(rule, why)``: which rule decided, and why)."""
        self.stage(token, "Reading the photo…")
        gray = to_gray(self.read(image, "image"))
        _damage(damage)
        pts, sens = _points(points, gray.shape), _sensitivity(sensitivity)
        with self.held(token):
            self.stage(token, f"Looking for damage in {gray.shape[1]}×{gray.shape[0]} pixels…")
            m, why = self._mask(gray, damage, pts, sens)
        self.stage(token, "Done.")
        return Image.fromarray(m.astype(np.uint8) * 255, "L"), why

    def _mask(self, gray, damage, points, sensitivity, given=None) -> tuple:
        """(H,W) gray -> ``(mask, (rule, why))``: ``given`` (else what ``damage`` finds) and what the
        clicks select (``pipeline.select`` at ``sensitivity``'s threshold; None: the policy's). The
        pipeline's own policy is left as it is: the threshold is this call's."""
        from .pipeline import SCRATCH_SLOTS
        from .select import select
        pipe = self.pipe
        if given is None:
            given, why = pipe.detect(gray, damage, explain=True)
        else:
            why = ("given", "a given mask")
        if not points:
            return given, why
        policy = pipe.damage_policy if sensitivity is None else replace(
            pipe.damage_policy, select_threshold=SELECT[0] - SELECT[1] * sensitivity)
        slots = [s for s in SCRATCH_SLOTS if pipe._stages.get(s) is not None] or ["mask"]
        chosen = select(gray, points, {s: pipe._ready(s) for s in slots}, policy, pipe._tile)
        return given | chosen, ("points", f"{len(points)} click(s) selected {chosen.mean():.1%} (at probability ≥ "
                                          f"{policy.select_threshold:.2f}); {why[1]}")

    def preview(self, image: bytes) -> tuple:
        """-> (a PNG of the photo at most ``PREVIEW_PX`` px wide and high, its full size)."""
        im = self.read(image, "image")
        size, im = im.size, im.convert("RGB") if im.mode not in ("L", "RGB") else im
        im.thumbnail((PREVIEW_PX, PREVIEW_PX))
        return _png(im), size


def _hints(text: str) -> list:
    """The ``hints`` form field (JSON ``[[x, y, "#rrggbb"], ...]``) -> ``(x, y, colour)`` items."""
    try:
        items = json.loads(text)
    except ValueError:
        raise ValueError("hints: not JSON (expected [[x, y, \"#rrggbb\"], ...])") from None
    if not isinstance(items, list):
        raise ValueError("hints: expected a list [[x, y, \"#rrggbb\"], ...]")
    return Hints.of(items)


def _damage(damage: Optional[str]) -> None:
    if damage is not None and damage not in DAMAGE:
        raise ValueError(f"damage: must be one of {', '.join(DAMAGE)}, got {damage!r}")


def _sensitivity(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0 <= value <= 1:
        raise ValueError(f"sensitivity: must be within 0..1, got {value:g}")
    return value


def _points(text: Optional[str], shape: tuple) -> Optional[list]:
    """The ``points`` form field (JSON ``[[x, y], ...]``, pixels of the image) -> ``[(x, y), ...]``."""
    if not text:
        return None
    try:
        items = json.loads(text)
    except ValueError:
        raise ValueError("points: not JSON (expected [[x, y], ...] in pixels of the image)") from None
    ok = isinstance(items, list) and all(isinstance(p, list) and len(p) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in p) for p in items)
    if not ok:
        raise ValueError(f"points: expected [[x, y], ...] in pixels of the image, got {text[:40]!r}")
    for x, y in items:
        if not (0 <= x < shape[1] and 0 <= y < shape[0]):
            raise ValueError(f"points: ({x:g}, {y:g}) is outside the {shape[1]}×{shape[0]} image")
    return [(float(x), float(y)) for x, y in items] or None
