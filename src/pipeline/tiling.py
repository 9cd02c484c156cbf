"""Tiled inference with overlapping, linearly blended tiles (bounded memory, no seams)."""
from __future__ import annotations

from typing import Callable

import torch


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, stride))
    return s + [n - tile]


def _ramp(n: int, overlap: int, lo_edge: bool, hi_edge: bool) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float32)
    r = torch.ones(n)
    if overlap > 0:
        if not lo_edge:
            r = torch.minimum(r, (i + 1) / (overlap + 1))
        if not hi_edge:
            r = torch.minimum(r, (n - i) / (overlap + 1))
    return r


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int = 1024,
          overlap: int = 128) -> torch.Tensor:
    """Apply ``fn`` ((B,C,h,w) -> (B,C',h,w), same size) to ``x`` (B,C,H,W) in overlapping tiles
    of at most ``tile`` pixels and blend them with linear ramps over the overlap. Images that
    fit in one tile are passed through whole."""
    B, _, H, W = x.shape
    if (H <= tile and W <= tile) or tile <= 0:
        return fn(x)
    overlap = min(overlap, tile // 2)
    stride = tile - overlap
    out = wsum = None
    for y in _starts(H, tile, stride):
        for x0 in _starts(W, tile, stride):
            th, tw = min(tile, H), min(tile, W)
            o = fn(x[..., y:y + th, x0:x0 + tw]).float()
            if out is None:
                out = torch.zeros(B, o.shape[1], H, W, device=o.device)
                wsum = torch.zeros(1, 1, H, W, device=o.device)
            wy = _ramp(th, overlap, y == 0, y + th >= H).to(o.device)
            wx = _ramp(tw, overlap, x0 == 0, x0 + tw >= W).to(o.device)
            w = (wy[:, None] * wx[None, :])[None, None]
            out[..., y:y + th, x0:x0 + tw] += o * w
            wsum[..., y:y + th, x0:x0 + tw] += w
    return out / wsum
