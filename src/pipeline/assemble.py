"""Combine separately trained stage folders into one Pipeline folder.

    python -m pipeline.assemble --mask runs/mask --inpaint runs/inp --colorize runs/col --out runs/pipe [--fp16]

A slot can also come from an existing Pipeline (``--base DIR_OR_NAME``; e.g. swap the colorizer of
the shipped ``demo``). ``--fp16`` stores the weights in half precision (half the size; they are
restored to fp32 on load). ``--set`` changes inference settings: ``SLOT.KEY=VALUE`` for an
inference setting of a stage (e.g. ``colorize.saturation=0.6``, ``inpaint.context=32``;
architecture and loss settings are refused: the weights were trained with them), ``KEY=VALUE``
for a pipeline option (``precision``, ``backend``, ``tile_size``, ``tile_overlap``, ``preset``),
``damage.KEY=VALUE`` for the damage policy (e.g. ``damage.work_side=768``);
``precision`` may be a mapping per slot: ``--set "precision={mask: fp32, inpaint: auto, colorize: fp32}"``,
or one slot at a time: ``--set precision.colorize=auto`` (the other slots keep theirs).
``--drop SLOT`` leaves an optional slot of the base empty (``scratch`` or ``scratch2``): e.g. one
detector in place of demo's two, ``--base demo --scratch DIR --drop scratch2``.
"""
from __future__ import annotations

import argparse
import sys

from .pipeline import OPTIONS, SCRATCH_SLOTS, SLOT_STAGE, SLOTS


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.assemble``; returns the exit status (0 ok, 2 an unusable stage checkpoint)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.assemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="start from this Pipeline folder or shipped name")
    for slot in SLOTS:
        ap.add_argument(f"--{slot}", help=f"{slot} stage folder (written by python -m pipeline.train)"
                        + {"scratch": ": the optional old-photo damage detector",
                           "scratch2": ": a second one, its probability joined with scratch's (the higher kept)"}
                        .get(slot, ""))
    ap.add_argument("--drop", action="append", default=[], choices=SCRATCH_SLOTS, metavar="SLOT",
                    help=f"leave this optional slot of --base empty ({', '.join(SCRATCH_SLOTS)}; repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fp16", action="store_true", help="store weights as float16")
    ap.add_argument("--precision", help="the pipeline's inference precision: fp32 | bf16 | auto")
    ap.add_argument("--set", action="append", default=[], metavar="[SLOT.]KEY=VALUE",
                    help="override an inference setting (repeatable)")
    args = ap.parse_args(argv)
    both = [s for s in args.drop if getattr(args, s)]
    if both:
        ap.error(f"--drop {both[0]} and --{both[0]} contradict each other")

    import torch

    from stages import STAGES, CheckpointError, Stage

    from .pipeline import Pipeline
    try:
        pipe = Pipeline.load(args.base) if args.base else Pipeline()
        for slot in SLOTS:
            path = getattr(args, slot)
            if path:
                stage = Stage.load(path)
                want = STAGES[SLOT_STAGE[slot]]
                if not isinstance(stage, want):
                    raise CheckpointError(f"{path}: holds a {type(stage).__name__}, not a {want.__name__}")
                setattr(pipe, slot, stage)
        for slot in args.drop:
            setattr(pipe, slot, None)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.precision:
        err = apply_setting(pipe, f"precision={args.precision}")
        if err:
            print(f"error: --precision: {err}", file=sys.stderr)
            return 2
    for item in args.set:
        err = apply_setting(pipe, item)
        if err:
            print(f"error: --set {item}: {err}", file=sys.stderr)
            return 2
    out = pipe.save(args.out, dtype=torch.float16 if args.fp16 else None)
    print(f"wrote {out} ({', '.join(f'{k}={type(v).__name__}' for k, v in pipe.stages.items())})")
    return 0


def apply_setting(pipe, item: str) -> str | None:
    """Apply one ``[SLOT.]KEY=VALUE`` (``damage.KEY``: the damage policy's); returns an error message or None."""
    import yaml
    key, sep, raw = item.partition("=")
    if not sep:
        return "expected [SLOT.]KEY=VALUE"
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        return f"cannot read the value {raw!r}: {str(e).splitlines()[0]}"
    slot, dot, name = key.partition(".")
    if slot == "precision" and dot:
        current = pipe.precision
        per_slot = dict(current) if isinstance(current, dict) else dict.fromkeys(SLOTS, current)
        key, value = "precision", {**per_slot, name: value}
    if slot == "damage" and dot:  # the damage policy: pipeline.yaml's damage: section
        import dataclasses
        try:
            pipe.damage_policy = dataclasses.replace(pipe.damage_policy, **{name: value})
        except (TypeError, ValueError) as e:
            return str(e).splitlines()[0]
        return None
    if key == "precision" or not dot:
        if key not in OPTIONS:
            return f"unknown pipeline option {key!r} (options: {', '.join(OPTIONS)})"
        try:
            setattr(pipe, key, value)
        except (ValueError, RuntimeError) as e:
            return str(e)
        return None
    stage = pipe.stages.get(slot)
    if stage is None:
        return f"this pipeline has no {slot!r} stage"
    try:
        stage.set(name, value)
    except KeyError:
        return f"{slot} has no setting {name!r} (settings: {', '.join(stage.inference_settings())})"
    except ValueError as e:
        return str(e)
    return None


if __name__ == "__main__":
    sys.exit(main())
