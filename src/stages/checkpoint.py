"""The stage checkpoint format (the registry it looks names up in is ``stages.registry``)::

    stage_dir/config.yaml        {format: restore-stage/1, stage: <registry name>, config: {...}}
    stage_dir/model.safetensors  the state dict (fp32, or fp16 when saved with dtype=float16)

Checkpoints never name code: the ``stage`` key is looked up in ``STAGES``; nothing is unpickled.
Files are written atomically (a temporary file and a rename).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

from .registry import STAGES, CheckpointError, atomic_write_bytes  # noqa: F401  (re-exported)

FORMAT = "restore-stage/1"


def check_format(found, expected: str, where) -> None:
    """``found`` (a file's ``format``, e.g. ``restore-stage/1``) must be ``expected``'s kind at a
    version this code reads (≤ its own); a newer one asks for an upgrade. Files without a
    format (the first checkpoints) count as version 1."""
    if found is None:
        return
    kind, _, version = str(found).partition("/")
    own_kind, _, own_version = expected.partition("/")
    if kind != own_kind or not version.isdigit():
        raise CheckpointError(f"{where}: format {found!r} is not {own_kind!r}")
    if int(version) > int(own_version):
        raise CheckpointError(f"{where}: format {found!r} was written by a newer restore-pipeline; "
                              f"this version reads up to {expected!r}: upgrade the package")


def read_stage_config(path: str | os.PathLike) -> dict:
    """Read and validate ``path/config.yaml``; returns ``{"stage": name, "config": {...}}``."""
    path = Path(path)
    cfg_file = path / "config.yaml"
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a stage checkpoint folder (no such directory)")
    if not cfg_file.is_file():
        raise CheckpointError(f"{path}: not a stage checkpoint (config.yaml is missing)")
    try:
        meta = yaml.safe_load(cfg_file.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_file}: unreadable YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(meta, dict) or "stage" not in meta or not isinstance(meta.get("config", {}), dict):
        raise CheckpointError(f"{cfg_file}: not a stage config (needs 'stage' and a 'config' mapping)")
    if any(k == "_target_" for k in _walk_keys(meta)):
        raise CheckpointError(f"{cfg_file}: refusing a checkpoint config that names code (_target_)")
    check_format(meta.get("format"), FORMAT, cfg_file)
    if meta["stage"] not in STAGES:
        raise CheckpointError(f"{cfg_file}: unknown stage {meta['stage']!r} "
                              f"(known: {', '.join(sorted(STAGES))})")
    return meta


def _walk_keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _walk_keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_keys(v)


def _plain(obj):
    """Config values as plain YAML types (tuples -> lists, OmegaConf nodes -> containers)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(obj, (DictConfig, ListConfig)):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def write_stage(path: str | os.PathLike, name: str, config: dict, state: dict,
                dtype: torch.dtype | None = None) -> Path:
    """Write ``path/config.yaml`` and ``path/model.safetensors`` (each atomically);
    ``dtype=torch.float16`` stores floating tensors in half precision."""
    from safetensors.torch import save as st_save
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    atomic_write_bytes(path / "model.safetensors", st_save(tensors, metadata={"format": "pt"}))
    meta = {"format": FORMAT, "stage": name, "config": _plain(config)}
    atomic_write_bytes(path / "config.yaml", yaml.safe_dump(meta, sort_keys=False).encode())
    return path


def read_weights(path: Path, own: dict) -> dict:
    """``path/model.safetensors`` checked against ``own`` (the state dict the config builds):
    same tensor names and shapes, floating tensors cast to ``own``'s dtypes."""
    return check_weights(path / "model.safetensors", own, read_file(path))


def read_file(path: Path) -> dict:
    """Every tensor of ``path/model.safetensors`` (CPU), or one ``CheckpointError`` line."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{path}: model.safetensors is missing")
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable or truncated safetensors file ({e})") from None


def check_weights(weights: Path, own: dict, state: dict) -> dict:
    """``state`` (read from the file ``weights``) checked against ``own``: same tensor names and
    shapes, floating tensors cast to ``own``'s dtypes."""
    state = {k: (v.to(own[k].dtype) if k in own and v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = set(own) - set(state), set(state) - set(own)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: weights do not match the config "
                              f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise CheckpointError(f"{weights}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                              f"the config expects {tuple(own[bad[0]].shape)}")
    return state
