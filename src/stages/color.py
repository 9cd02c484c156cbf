"""Colour maths: PIL-exact gray, sRGB <-> CIE Lab (torch), luma-preserving recombination.

Conventions: uint8 arrays are 0..255; float RGB tensors are in [0, 1]; Lab tensors carry
L in [0, 100] and a, b roughly in [-110, 110] (D65 white, sRGB primaries).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

# Pillow's fixed-point ITU-R 601-2 luma (libImaging/Convert.c, L24): weights sum to 65536.
_L24 = (19595, 38470, 7471)


def pil_gray(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W) uint8 gray, bit-identical to PIL ``Image.convert("L")``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"pil_gray expects an (H,W,3) array, got shape {rgb.shape}")
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * _L24[0] + g * _L24[1] + b * _L24[2] + 0x8000) >> 16).astype(np.uint8)


# ----------------------------------------------------------------------------- Lab (torch)
def fp32(fn):
    """Run ``fn`` outside any autocast region: colour maths must stay exact fp32 even when the
    networks around it run in bf16/fp16."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)
    return wrapper


_M_RGB2XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
_M_XYZ2RGB = torch.linalg.inv(_M_RGB2XYZ)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_DELTA = 6.0 / 29.0


@functools.lru_cache(maxsize=None)
def _on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(RGB->XYZ, XYZ->RGB, white) on ``device``: copied there once, not at every call (a copy to
    a GPU inside the training loss stalls the host every step)."""
    return tuple(t.to(device) for t in (_M_RGB2XYZ, _M_XYZ2RGB, _WHITE))


def _srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA ** 3, t.clamp(min=1e-12) ** (1 / 3), t / (3 * _DELTA ** 2) + 4 / 29)


def _finv(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _DELTA, t * t * t, 3 * _DELTA ** 2 * (t - 4 / 29))


def _xyz_to_srgb(xyz: torch.Tensor) -> torch.Tensor:
    """(...,3,H,W) XYZ (D65, Y of white = 1) -> unclipped sRGB."""
    return _linear_to_srgb(torch.einsum("ij,...jhw->...ihw", _on(xyz.device)[1], xyz))


@fp32
def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) sRGB in [0,1] -> (B,3,H,W) Lab (L in [0,100])."""
    lin = _srgb_to_linear(rgb.float())
    m, _, white = _on(rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / white.view(1, 3, 1, 1)
    fx, fy, fz = _f(xyz).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


@fp32
def lab_to_rgb(lab: torch.Tensor, clip: bool = True) -> torch.Tensor:
    """(B,3,H,W) Lab -> (B,3,H,W) sRGB; clipped to [0,1] unless ``clip=False``."""
    L, a, b = lab.float().unbind(1)
    fy = (L + 16) / 116
    xyz = torch.stack([_finv(fy + a / 500), _finv(fy), _finv(fy - b / 200)], 1)
    rgb = _xyz_to_srgb(xyz * _on(lab.device)[2].view(1, 3, 1, 1))
    return rgb.clamp(0, 1) if clip else rgb


def _gray_ab_tail(y: torch.Tensor, fy: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Linear luminance y and f(y), each (...,1,H,W), + a, b (...,H,W) -> unclipped sRGB."""
    w = _WHITE.tolist()
    return _xyz_to_srgb(torch.cat([w[0] * _finv(fy + a.unsqueeze(-3) / 500), y,
                                   w[2] * _finv(fy - b.unsqueeze(-3) / 200)], -3))


@fp32
def gray_ab_to_rgb(gray: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) gray in [0,1] + (B,2,H,W) ab -> (B,3,H,W) unclipped sRGB; the same as
    ``lab_to_rgb(cat(gray_to_lightness(gray), ab), clip=False)`` with the round trip of the
    luminance through L skipped (Y is the gray's linear value)."""
    y = _srgb_to_linear(gray.float())
    a, b = ab.float().unbind(1)
    return _gray_ab_tail(y, _f(y), a, b)


_Y8 = _srgb_to_linear(torch.arange(256, dtype=torch.float64) / 255)  # linear Y of each uint8 gray
_LUT_Y, _LUT_FY = _Y8.float().numpy(), _f(_Y8).float().numpy()  # numpy: its take is ~2x faster


@fp32
def gray8_ab_to_rgb8(gray: np.ndarray, ab: torch.Tensor, block: int = 65536) -> np.ndarray:
    """The inference path of colour: (H,W) uint8 gray + (2,H,W) ab -> (H,W,3) uint8 RGB whose
    PIL gray equals ``gray`` (``combine_luma`` of ``gray_ab_to_rgb``; the gray's Y and f(Y) come
    from 256-entry tables). Runs over bands of about ``block`` pixels: the temporaries stay in
    cache (~1.5x faster at 512x512) and memory stays flat for huge images; same result."""
    g = _as_tensor(gray, np.uint8)
    gray = g.numpy()  # the same memory: numpy indexes the tables, torch does the rest
    ab = ab.float().cpu()
    out = torch.empty(g.shape + (3,), dtype=torch.uint8)
    rows = max(1, block // max(1, g.shape[1]))
    for r in range(0, g.shape[0], rows):
        g8 = gray[r:r + rows]
        y, fy = (torch.from_numpy(lut[g8]).unsqueeze(0) for lut in (_LUT_Y, _LUT_FY))
        a, b = ab[:, r:r + rows].unbind(0)
        out[r:r + rows] = _combine(g[r:r + rows], _gray_ab_tail(y, fy, a, b).mul_(255))
    return out.numpy()


@fp32
def gray_to_lightness(gray: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) gray in [0,1] -> (B,1,H,W) Lab L of the neutral colour with that gray."""
    y = _srgb_to_linear(gray.float())
    return 116 * _f(y) - 16


# ----------------------------------------------------------------- luma-preserving combine
def combine_luma(gray: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Give ``rgb`` the exact PIL gray ``gray`` while keeping as much of its colour as fits.

    gray: (H,W) uint8; rgb: (H,W,3) float in [0,255] (values outside are fine).
    Returns (H,W,3) uint8 whose PIL ``convert("L")`` equals ``gray`` within ±1 (exact at
    nearly every pixel). Each pixel's chroma is shrunk just enough to keep all channels in
    [0,255] (zero chroma always fits), instead of clipping, which would change the gray.
    """
    return _combine(_as_tensor(gray, np.uint8), _as_tensor(rgb, np.float32).permute(2, 0, 1)).numpy()


def _as_tensor(a: np.ndarray, dtype) -> torch.Tensor:
    """A tensor sharing ``a``'s memory when it can (copied if read-only, e.g. from a PIL image,
    which torch would warn about)."""
    return torch.from_numpy(np.require(a, dtype, ["C", "W"]))


_LUMA = (0.299, 0.587, 0.114)


@torch.inference_mode()
def _combine(gray: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """``combine_luma`` on tensors: (H,W) uint8 + (3,H,W) float -> (H,W,3) uint8 (contiguous).
    Torch rather than numpy: its elementwise ops use every core."""
    y = gray.float()
    d = rgb - (_LUMA[0] * rgb[0] + _LUMA[1] * rgb[1] + _LUMA[2] * rgb[2])  # chroma; luma 0
    # only the largest and the smallest offset of a pixel can leave [0, 255]
    hi, lo = d.amax(0), d.amin(0)
    room_hi, room_lo = 255 - y, -y
    t = torch.where(hi > room_hi, room_hi / hi, 1.0)
    t = torch.minimum(t, torch.where(lo < room_lo, room_lo / lo, 1.0)).clamp_(0, 1)
    out = d.mul_(t).add_(y).round_().clamp_(0, 255).to(torch.int32)
    # Rounding can move the PIL gray by one step: fix it with one channel, in PIL's own integer
    # arithmetic (gray = (sum_c w_c * v_c + 2^15) >> 16).
    yi = gray.to(torch.int32)
    acc = out[0] * _L24[0] + out[1] * _L24[1] + out[2] * _L24[2]
    for c in (1, 0, 2):
        err = yi - ((acc + 0x8000) >> 16)
        if not bool(err.any()):
            break
        nc = (out[c] + err).clamp_(0, 255)
        acc2 = acc + _L24[c] * (nc - out[c])
        ok = (err != 0) & (((acc2 + 0x8000) >> 16) == yi)
        out[c] = torch.where(ok, nc, out[c])
        acc = torch.where(ok, acc2, acc)
    return out.to(torch.uint8).permute(1, 2, 0).contiguous()
