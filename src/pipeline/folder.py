"""A Pipeline's checkpoint folder: ``pipeline.yaml`` (format, the stage of each slot, the pipeline
options, the ``damage:`` section) and one stage folder per filled slot; the shipped checkpoints
(``demo``) and the upgrades that keep older folders loading."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml

from stages import CheckpointError, Stage
from stages.checkpoint import check_format
from stages.registry import atomic_write_bytes

from . import engines
from .policy import DamagePolicy

FORMAT = "restore-pipeline/1"
SLOT_STAGE = {"mask": "mask", "inpaint": "inpaint", "colorize": "colorize", "scratch": "mask",
              "scratch2": "mask", "colorize_photo": "colorize"}  # slot -> stage
SCRATCH_SLOTS = ("scratch", "scratch2")  # the scratch path's detectors, in order
SLOTS = tuple(SLOT_STAGE)
MOVED = {"context": "inpaint", "hole_saturation": "colorize"}  # former pipeline options: their stages' at load
CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint folder path, or the name of one shipped with the package (e.g. ``demo``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = CHECKPOINTS_DIR / str(name_or_path)
    if shipped.is_dir():
        return shipped
    known = sorted(d.name for d in CHECKPOINTS_DIR.iterdir() if d.is_dir()) if CHECKPOINTS_DIR.is_dir() else []
    raise CheckpointError(f"{name_or_path}: no such checkpoint folder"
                          + (f" (shipped checkpoints: {', '.join(known)})" if known else ""))


def read_meta(path: Path) -> dict:
    """``path/pipeline.yaml``, checked: its format and slots, or one ``CheckpointError`` line."""
    meta_file = path / "pipeline.yaml"
    if not meta_file.is_file():
        raise CheckpointError(f"{path}: not a pipeline checkpoint (pipeline.yaml is missing)")
    try:
        meta = yaml.safe_load(meta_file.read_text()) or {}
    except yaml.YAMLError as e:
        raise CheckpointError(f"{meta_file}: unreadable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("stages", {}), dict):
        raise CheckpointError(f"{meta_file}: not a pipeline config")
    check_format(meta.get("format"), FORMAT, meta_file)
    for name in meta.get("stages", {}):
        if name not in SLOTS:
            raise CheckpointError(f"{meta_file}: unknown slot {name!r} (slots: {', '.join(SLOTS)})")
    return meta


def save(path: str | os.PathLike, stages: dict, options: dict, damage: DamagePolicy,
         dtype: torch.dtype | None = None) -> Path:
    """Write ``stages`` (``{slot: Stage}``), ``options`` and the damage policy into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, stage in stages.items():
        stage.save(path / name, dtype=dtype)
    meta = {"format": FORMAT, "stages": {k: v.name for k, v in stages.items()}, "options": options,
            "damage": damage.to_dict()}
    atomic_write_bytes(path / "pipeline.yaml", yaml.safe_dump(meta, sort_keys=False).encode())
    return path


def load(path: str | os.PathLike, device, options: dict) -> tuple[dict, dict]:
    """``({slot: Stage}, saved options + damage_policy)`` of a folder or shipped name; ``options``
    (this load's) choose the backend, which decides whether a torch network is built at all."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    saved = dict(meta.get("options") or {})
    # an engine running a network from its cache needs no torch network: built at first use, if ever
    defer = engines.may_skip_torch(options.get("backend", saved.get("backend", "torch")), torch.device(device))
    stages = {name: Stage.load(path / name, defer_net=defer) for name in meta.get("stages", {})}
    # (without a scratch slot the mask detector is the scratch path, with its own settings)
    scan = [s for s in SCRATCH_SLOTS if s in stages] or [s for s in ("mask",) if s in stages]
    saved["damage_policy"] = DamagePolicy.of_checkpoint(meta, path, scan)
    for key, slot in MOVED.items():  # upgrade: a former pipeline option becomes its stage's setting
        if key in saved and stages.get(slot) is not None:
            stages[slot].set(key, saved.pop(key))
    return stages, saved
