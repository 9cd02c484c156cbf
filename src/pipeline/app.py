"""A local web page for restoring your own photos, and a plain HTTP API beside it (docs/app.md).

    python -m pipeline.app [--checkpoint demo] [--port 7860] [--host 127.0.0.1] [--max-upload-mb 200]

Open the printed URL: drop photos, see the detected damage as a red overlay, paint or erase it
with the brush, click a crack to select it (a sensitivity slider: more or less of it), choose the
colour, Restore, compare before/after, download the PNG (several photos: one each, or a zip).
Everything runs on this machine: the page and its scripts are served from the package (no CDN,
no analytics, no API docs page); the server binds to 127.0.0.1 unless ``--host`` says otherwise.
The models warm up in a background thread at start (``--no-warm-up``: not).

Built on FastAPI (not Gradio): a small dependency, one static page whose every element is ours
to test in a browser, and the API is the same routes the page uses (their fields: docs/app.md):
``POST /api/restore`` (-> the PNG) and ``/api/restore/full`` (-> JSON: image, gray, mask, the
``report``, a toned print's colourised twin), ``/api/detect`` (-> the mask PNG, ``X-Explain``:
which rule decided, and why), ``/api/select`` (clicks on damage -> JSON: their mask and why),
``/api/preview``, ``/api/zip``, ``GET /api/progress/{token}``, ``/api/info``. A bad request gets
a 4xx with one line in ``detail``; the server goes on. Requests are served one at a time, in
order (a lock), so two at once never mix their results or settings.
"""
import argparse
import base64
import hashlib
import io
import json
import sys
import tempfile
import threading
import zipfile
from dataclasses import replace
from collections import OrderedDict
from pathlib import Path
from typing import List, Optional
from urllib.parse import quote

import numpy as np
from PIL import Image

from stages.processors import KINDS as DAMAGE_KINDS
from stages.processors import Hints

from .io import ImageError, open_bytes, to_gray, to_mask
from .policy import COLOURS as COLOUR, PRESETS

ASSETS = Path(__file__).parent / "assets" / "app"
PAGE = ASSETS / "index.html"
SERVED = {"app.js": "text/javascript; charset=utf-8", "select.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}  # beside the page
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#555"/><circle cx="8" cy="8" r="4" fill="#e8a33d"/></svg>')
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
    (``pipeline.restore.unique_names``), UTF-8 flagged by ``zipfile`` where not ASCII."""
    from .restore import unique_names
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


def _run(fn, *args, **kwargs):
    """``fn(*args)``; a bad request becomes an HTTP 4xx with one line."""
    from fastapi import HTTPException
    try:
        return fn(*args, **kwargs)
    except (ImageError, ValueError) as e:
        code = 413 if "over the" in str(e) else 400
        raise HTTPException(code, str(e).splitlines()[0]) from None


def _body(f) -> Optional[bytes]:
    return f.file.read() if f is not None else None


def _full(res, alt, token) -> dict:
    """``/api/restore/full``'s JSON for a restoration (and its colourised twin, if any)."""
    out = {"image": _data_url(res.image), "gray": _data_url(res.gray), "mask": _data_url(res.mask),
           "damaged_fraction": float(np.asarray(res.mask).mean() / 255), "token": token,
           "report": res.report.to_dict() if res.report is not None else None}
    if alt is not None:
        out["colourised"], out["colourised_report"] = _data_url(alt.image), alt.report.to_dict()
    return out


def _restore_routes(app, r) -> None:
    from fastapi import Depends, File, Form, HTTPException, UploadFile
    from fastapi.responses import Response

    def restored(image: UploadFile = File(...), mask: Optional[UploadFile] = File(None),
                 saturation: Optional[float] = Form(None), damage: Optional[str] = Form(None),
                 references: Optional[List[UploadFile]] = File(None), colour: Optional[str] = Form(None),
                 hints: Optional[str] = Form(None), normalise: bool = Form(False), preset: Optional[str] = Form(None),
                 token: Optional[str] = Form(None), points: Optional[str] = Form(None),
                 sensitivity: Optional[float] = Form(None)):
        return dict(image=_body(image), mask=_body(mask), saturation=saturation, damage=damage, colour=colour,
                    points=points, sensitivity=sensitivity,
                    references=[(f.filename or "reference", f.file.read()) for f in references or []], hints=hints, normalise=normalise, preset=preset,
                    token=(token or "")[:64] or None)

    @app.post("/api/restore")
    def restore(req=Depends(restored)):
        res, _ = _run(r.restore, **req)
        return Response(_png(res.image), media_type="image/png", headers={"X-Token": req["token"] or ""})

    @app.post("/api/restore/full")
    def restore_full(req=Depends(restored)):
        return _full(*_run(r.restore, **req, both=True), req["token"])

    def detected(image: UploadFile = File(...), damage: Optional[str] = Form(None), token: Optional[str] = Form(None),
                 points: Optional[str] = Form(None), sensitivity: Optional[float] = Form(None)):
        return dict(image=_body(image), damage=damage, token=(token or "")[:64] or None, points=points,
                    sensitivity=sensitivity)

    @app.post("/api/detect")
    def detect(req=Depends(detected)):
        m, (rule, why) = _run(r.detect, **req)
        return Response(_png(m), media_type="image/png", headers={  # the why as UTF-8, %-encoded
            "X-Token": req["token"] or "", "X-Explain": quote(f"{rule}: {why}", safe=" :;,()")})

    @app.post("/api/select")
    def select(req=Depends(detected)):
        if not (req["points"] or "").strip(" []"):
            raise HTTPException(400, "points: needs at least one click, [[x, y], ...] in pixels of the image")
        req["damage"] = req["damage"] or "none"
        m, (rule, why) = _run(r.detect, **req)
        return {"mask": _data_url(m), "rule": rule, "why": why, "token": req["token"],
                "share": float(np.asarray(m).mean() / 255)}

    @app.post("/api/preview")
    def preview(image: UploadFile = File(...)):
        png, (w, h) = _run(r.preview, _body(image))
        return Response(png, media_type="image/png", headers={"X-Image-Size": f"{w}x{h}"})

    @app.post("/api/zip")
    def make_zip(files: List[UploadFile] = File(...)):
        return Response(zip_bytes([(f.filename or "photo.png", f.file.read()) for f in files]),
                        media_type="application/zip", headers={"Content-Disposition": 'attachment; filename="restored.zip"'})


def create_app(pipe=None, checkpoint: str = "demo", max_upload_mb: float = MAX_UPLOAD_MB, warm_up: bool = False):
    """The FastAPI app around ``pipe`` (default: ``Pipeline.load(checkpoint)``). ``warm_up``: the
    models run once on two small photos in a background thread (tests leave it off)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    if pipe is None:
        from .pipeline import Pipeline
        pipe = Pipeline.load(checkpoint)
    r = Restorer(pipe, max_upload_mb)
    if warm_up:
        threading.Thread(target=r.warm_up, daemon=True, name="warm-up").start()
    else:
        r.ready.set()
    app = FastAPI(title="restore-pipeline", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.restorer = r

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > r.max_bytes * 2 + 2 ** 20:
            return JSONResponse({"detail": str(r._too_big("request", int(length)))}, 413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_line(_request, exc):  # a missing or malformed field: one line, as every other bad request
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {err.get('msg', 'invalid').lower()}"}, 400)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text()

    @app.get("/assets/{name}")
    def asset(name: str):
        if name not in SERVED:
            return JSONResponse({"detail": f"{name}: no such file"}, 404)
        return Response((ASSETS / name).read_bytes(), media_type=SERVED[name])

    @app.get("/favicon.ico")
    def favicon():
        return Response(FAVICON, media_type="image/svg+xml")

    @app.get("/api/info")
    def info():
        return {"checkpoint": str(checkpoint), "saturation": pipe.colorize.config["saturation"],
                "damage": pipe.damage, "damage_kinds": list(DAMAGE_KINDS), "max_upload_mb": max_upload_mb,
                "presets": list(PRESETS), "preset": pipe.preset,
                "sensitivity": round(min(1, max(0, (SELECT[0] - pipe.damage_policy.select_threshold) / SELECT[1])), 2), "ready": r.ready.is_set(),
                "hint_channels": bool(pipe.colorize.config["hints"])}  # hints work with any; these take them in

    @app.get("/api/progress/{token}")
    def progress(token: str):
        return {"token": token, "stage": r.stages.get(token), "ready": r.ready.is_set()}

    _restore_routes(app, r)
    return app


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m pipeline.app``: serve the page until Ctrl-C."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo", help="Pipeline folder or shipped name (default: demo)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                    help=f"the largest photo the page takes, in MB (default: {MAX_UPLOAD_MB})")
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="allow images up to this many pixels (default: Pillow's decompression-bomb limit)")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="do not run the models once at start (the first photo then waits a few seconds)")
    args = ap.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        print('error: the app needs its extra: pip install "restore-pipeline[app]"', file=sys.stderr)
        return 2
    if args.max_pixels:
        Image.MAX_IMAGE_PIXELS = int(args.max_pixels)
    from stages import CheckpointError
    try:
        app = create_app(checkpoint=args.checkpoint, max_upload_mb=args.max_upload_mb, warm_up=not args.no_warm_up)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this page", file=sys.stderr)
    print(f"restore-pipeline app on http://{args.host}:{args.port}/  (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
