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
import sys
import threading
from pathlib import Path
from typing import List, Optional
from urllib.parse import quote

import numpy as np
from PIL import Image

from stages.processors import KINDS as DAMAGE_KINDS

from .io import ImageError
from .policy import PRESETS
from .restorer import (MAX_UPLOAD_MB, SELECT, WAITING, WARMING, Restorer, _data_url, _png,  # noqa: F401
                       zip_bytes)

ASSETS = Path(__file__).parent / "assets" / "app"
PAGE = ASSETS / "index.html"
SERVED = {"app.js": "text/javascript; charset=utf-8", "select.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}  # beside the page
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#555"/><circle cx="8" cy="8" r="4" fill="#e8a33d"/></svg>')


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
