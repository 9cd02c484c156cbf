"""A local web page for restoring your own photos, and a plain HTTP API beside it.

    python -m pipeline.app [--checkpoint demo] [--port 7860] [--host 127.0.0.1]

Open the printed URL: drop photos, see the detected damage as a red overlay, paint or erase it
with the brush (or clear it to restore colour only), choose the colour strength, Restore, compare
before/after, download the PNG (several photos: a zip). Everything runs on this machine: the page
and its script are served from the package (no CDN, no analytics, no API docs page), and the
server binds to 127.0.0.1 unless ``--host`` says otherwise.

Built on FastAPI (not Gradio): a small dependency, one static page whose every element is ours
to test in a browser, and the API is the same routes the page uses:

- ``POST /api/restore``: multipart ``image`` (any format/size the library reads), optional
  ``mask`` (same size, nonzero = damaged), ``saturation`` (colour strength, 0–2), ``damage``
  (``auto``, ``shape``, ``scratches``), ``references`` (any number of colour photos of the same
  scene; a verified one gives the hole's content and the colour), ``colour`` (``auto``, ``keep``,
  ``recolour``: what a colour photo keeps), ``normalise`` (true: a faded print's tones spread
  again), ``hints`` (JSON ``[[x, y, "#rrggbb"], ...]``, colours known at pixels; a colorizer with
  hint channels) -> the restored PNG. ``/api/restore/full`` returns JSON
  with the image, the inpainted gray and the mask as PNG data URLs; ``/api/detect`` the mask PNG.
- A bad upload gets a 4xx with one line in ``detail``; the server goes on. Requests are served
  one restore at a time (a lock), so two at once never mix their results or settings.
"""
import argparse
import base64
import hashlib
import io
import json
import sys
import tempfile
import threading
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from stages.processors import KINDS as DAMAGE_KINDS
from stages.processors import Hints

from .io import ImageError, open_bytes, to_gray, to_mask

PAGE = Path(__file__).parent / "assets" / "app" / "index.html"
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#555"/><circle cx="8" cy="8" r="4" fill="#e8a33d"/></svg>')
MAX_UPLOAD_MB = 50
COLOUR = {"auto": None, "keep": True, "recolour": False}  # the colour field -> Pipeline.restore(keep_colour=)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _data_url(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(img)).decode()


class Restorer:
    """The pipeline behind the app: uploads in, restorations out, one request at a time."""

    def __init__(self, pipe, max_upload_mb: float = MAX_UPLOAD_MB):
        self.pipe, self.max_bytes = pipe, int(max_upload_mb * 2 ** 20)
        self.lock = threading.Lock()
        self._refs: tuple = (None, None, None)  # digest of the uploaded references, their Library, their folder

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
            for i, (name, data) in enumerate(uploads):
                if len(data) > self.max_bytes:
                    raise ImageError(f"{name}: upload of {len(data) / 2 ** 20:.1f} MB is over the "
                                     f"{self.max_bytes / 2 ** 20:.0f} MB limit")
                (Path(tmp.name) / f"{i:04d}{Path(name).suffix.lower() or '.png'}").write_bytes(data)
            self._refs = (digest, Library.build([tmp.name]), tmp)
        return self._refs[1]

    def read(self, data: bytes, name: str) -> Image.Image:
        """Upload bytes -> a loaded PIL image; ``ImageError`` (one line) when unusable."""
        if not data:
            raise ImageError(f"{name}: empty upload")
        if len(data) > self.max_bytes:
            raise ImageError(f"{name}: upload of {len(data) / 2 ** 20:.1f} MB is over the "
                             f"{self.max_bytes / 2 ** 20:.0f} MB limit")
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
                hints: Optional[str] = None, normalise: bool = False):
        """-> ``Restoration``; raises ``ImageError``/``ValueError`` for a bad request. ``colour``:
        ``auto``, ``keep`` or ``recolour`` (a colour photo, see ``Pipeline.restore(keep_colour=)``);
        ``hints``: JSON ``[[x, y, "#rrggbb"], ...]``, colours known at pixels of the image;
        ``normalise``: a faded print's tones spread again (``Pipeline.restore(normalise=)``)."""
        im = self.read(image, "image")
        m = to_mask(self.read(mask, "mask"), (im.height, im.width), name="mask upload") if mask else None
        if colour not in (None, *COLOUR):
            raise ValueError(f"colour: must be one of {', '.join(COLOUR)}, got {colour!r}")
        hints = _hints(hints) if hints else None
        if damage is not None and damage not in DAMAGE_KINDS:
            raise ValueError(f"damage: must be one of {', '.join(DAMAGE_KINDS)}, got {damage!r}")
        if saturation is not None and not 0 <= saturation <= 2:
            raise ValueError(f"saturation: must be within 0..2, got {saturation}")
        with self.lock:  # one restore at a time: the engines and their caches are shared
            refs = self.references(references or [])
            return self.pipe.restore(im, mask=m, return_intermediates=True, damage=damage, references=refs,
                                     saturation=None if saturation is None else float(saturation),
                                     keep_colour=COLOUR.get(colour), hints=hints, normalise=bool(normalise))

    def detect(self, image: bytes, damage: Optional[str] = None) -> Image.Image:
        gray = to_gray(self.read(image, "image"))
        if damage is not None and damage not in DAMAGE_KINDS:
            raise ValueError(f"damage: must be one of {', '.join(DAMAGE_KINDS)}, got {damage!r}")
        with self.lock:
            m = self.pipe.detect(gray, damage)
        return Image.fromarray(m.astype(np.uint8) * 255, "L")


def _hints(text: str) -> list:
    """The ``hints`` form field (JSON ``[[x, y, "#rrggbb"], ...]``) -> ``(x, y, colour)`` items."""
    try:
        items = json.loads(text)
    except ValueError:
        raise ValueError("hints: not JSON (expected [[x, y, \"#rrggbb\"], ...])") from None
    if not isinstance(items, list):
        raise ValueError("hints: expected a list [[x, y, \"#rrggbb\"], ...]")
    return Hints.of(items)


def _run(fn, *args):
    """``fn(*args)``; a bad request becomes an HTTP 4xx with one line."""
    from fastapi import HTTPException
    try:
        return fn(*args)
    except (ImageError, ValueError) as e:
        code = 413 if "over the" in str(e) else 400
        raise HTTPException(code, str(e).splitlines()[0]) from None


def _body(f) -> Optional[bytes]:
    return f.file.read() if f is not None else None


def _bodies(fs) -> list:
    return [(f.filename or "reference", f.file.read()) for f in fs or []]


def create_app(pipe=None, checkpoint: str = "demo", max_upload_mb: float = MAX_UPLOAD_MB):
    """The FastAPI app around ``pipe`` (default: ``Pipeline.load(checkpoint)``)."""
    from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    if pipe is None:
        from .pipeline import Pipeline
        pipe = Pipeline.load(checkpoint)
    r = Restorer(pipe, max_upload_mb)
    app = FastAPI(title="restore-pipeline", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > r.max_bytes * 2 + 2 ** 20:
            return JSONResponse({"detail": f"request of {int(length) / 2 ** 20:.1f} MB is over the limit"}, 413)
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def one_line(_request, exc):  # a missing or malformed field: one line, as every other bad request
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        return JSONResponse({"detail": f"{where}: {err.get('msg', 'invalid').lower()}"}, 400)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return PAGE.read_text()

    @app.get("/favicon.ico")
    def favicon():
        return Response(FAVICON, media_type="image/svg+xml")

    @app.get("/api/info")
    def info():
        return {"checkpoint": str(checkpoint), "saturation": pipe.colorize.config["saturation"],
                "damage": pipe.damage, "damage_kinds": list(DAMAGE_KINDS), "max_upload_mb": max_upload_mb,
                "hint_channels": bool(pipe.colorize.config["hints"])}  # hints work with any; these take them in

    def restored(image: UploadFile = File(...), mask: Optional[UploadFile] = File(None),
                 saturation: Optional[float] = Form(None), damage: Optional[str] = Form(None),
                 references: Optional[List[UploadFile]] = File(None), colour: Optional[str] = Form(None),
                 hints: Optional[str] = Form(None), normalise: bool = Form(False)):
        return _run(r.restore, _body(image), _body(mask), saturation, damage, _bodies(references), colour, hints,
                    normalise)

    @app.post("/api/restore")
    def restore(res=Depends(restored)):
        return Response(_png(res.image), media_type="image/png")

    @app.post("/api/restore/full")
    def restore_full(res=Depends(restored)):
        return {"image": _data_url(res.image), "gray": _data_url(res.gray), "mask": _data_url(res.mask),
                "damaged_fraction": float(np.asarray(res.mask).mean() / 255)}

    @app.post("/api/detect")
    def detect(image: UploadFile = File(...), damage: Optional[str] = Form(None)):
        return Response(_png(_run(r.detect, _body(image), damage)), media_type="image/png")

    return app


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m pipeline.app``: serve the page until Ctrl-C."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.app", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo", help="Pipeline folder or shipped name (default: demo)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB)
    ap.add_argument("--max-pixels", type=int, default=None,
                    help="allow images up to this many pixels (default: Pillow's decompression-bomb limit)")
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
        app = create_app(checkpoint=args.checkpoint, max_upload_mb=args.max_upload_mb)
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
