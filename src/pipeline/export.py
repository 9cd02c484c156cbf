"""Export each stage's network to ONNX, for ONNX Runtime or any other ONNX engine.

    python -m pipeline.export [--checkpoint demo] --out exported/

Writes ``<out>/<slot>.onnx`` (mask, inpaint, colorize): input ``x`` (B,C,H,W) float32, output
``y``; batch, height and width are dynamic. Only the networks are exported; the pre/post-processing
around them (Telea prefill, ab decoding, luma recombination) stays in Python, so to restore photos
through OpenVINO or ONNX Runtime use ``Pipeline.load(..., backend="openvino"|"onnx")`` or
``restore --backend openvino|onnx``, which export in memory on first use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.export``; returns the exit status (0 ok, 2 unusable checkpoint)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo", help="a pipeline folder or a shipped name")
    ap.add_argument("--out", required=True, help="folder for <slot>.onnx")
    args = ap.parse_args(argv)

    from stages import CheckpointError

    from .pipeline import Pipeline
    try:
        pipe = Pipeline.load(args.checkpoint)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for slot, stage in pipe.stages.items():
        data = stage.export_onnx(out / f"{slot}.onnx")
        print(f"wrote {out / f'{slot}.onnx'} ({len(data) / 1e6:.1f} MB, {stage.net_in_channels} input channels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
