"""Colour maths: PIL-exact gray, sRGB <-> CIE Lab (torch: training and batches), luma-preserving
recombination and the inference path gray + ab -> RGB (numpy/OpenCV: uint8 images).

Conventions: uint8 arrays are 0..255; float RGB tensors are in [0, 1]; Lab tensors carry
L in [0, 100] and a, b roughly in [-110, 110] (D65 white, sRGB primaries).
"""
from __future__ import annotations

import functools

import cv2
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
_LUT_Y, _LUT_FY = _Y8.float().numpy(), _f(_Y8).float().numpy()
# The inference path below runs in numpy/OpenCV on float32 with buffers reused over bands: ~2x
# faster than the same maths in eager torch, whose ~70 small ops per band cost more in dispatch
# and temporaries than in arithmetic (12 against 25 ms per 512x512 on one core).
_F = np.float32
_M_NP = _M_XYZ2RGB.numpy()
_W_NP = _WHITE.numpy()
_LIN_K, _LIN_C = _F(3 * _DELTA ** 2), _F(4 / 29)


def _finv_into(t: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``_finv`` of float32 ``t`` into ``out`` (``tmp``: scratch of the same shape)."""
    np.subtract(t, _LIN_C, out=out)
    out *= _LIN_K
    np.multiply(t, t, out=tmp)
    tmp *= t
    np.copyto(out, tmp, where=t > _F(_DELTA))
    return out


def _srgb255_into(c: np.ndarray, tmp: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Linear ``c`` (float32, overwritten) -> unclipped sRGB x 255 in ``c``."""
    np.less_equal(c, _F(0.0031308), out=low)
    np.maximum(c, _F(1e-12), out=tmp)
    np.power(tmp, _F(1 / 2.4), out=tmp)
    tmp *= _F(1.055)
    tmp -= _F(0.055)
    c *= _F(12.92)
    np.copyto(c, tmp, where=~low)
    c *= _F(255)
    return c


def gray8_ab_to_rgb8(gray: np.ndarray, ab, block: int = 32768) -> np.ndarray:
    """The inference path of colour: (H,W) uint8 gray + (2,H,W) ab (tensor or array) -> (H,W,3)
    uint8 RGB whose PIL gray equals ``gray`` (``combine_luma`` of ``gray_ab_to_rgb``; the gray's Y
    and f(Y) come from 256-entry tables). Runs over bands of about ``block`` pixels, so the
    temporaries stay in cache and memory stays flat for huge images; same result."""
    g = np.ascontiguousarray(gray, np.uint8)
    ab = ab.detach().float().cpu().numpy() if isinstance(ab, torch.Tensor) else np.asarray(ab, np.float32)
    h, w = g.shape
    out = np.empty((h, w, 3), np.uint8)
    rows = max(1, min(h, block // max(1, w)))
    buf = np.empty((9, rows, w), np.float32)
    low = np.empty((rows, w), bool)
    for r in range(0, h, rows):
        n = min(rows, h - r)
        g8 = g[r:r + n]
        y, fy, t, x, z, tmp, *rgb = buf[:, :n]
        cv2.LUT(g8, _LUT_Y, dst=y)
        cv2.LUT(g8, _LUT_FY, dst=fy)
        np.divide(ab[0, r:r + n], _F(500), out=t)
        t += fy
        _finv_into(t, x, tmp)
        x *= _W_NP[0]
        np.divide(ab[1, r:r + n], _F(200), out=t)
        np.subtract(fy, t, out=t)
        _finv_into(t, z, tmp)
        z *= _W_NP[2]
        for i, c in enumerate(rgb):
            np.multiply(x, _M_NP[i, 0], out=c)
            np.multiply(y, _M_NP[i, 1], out=tmp)
            c += tmp
            np.multiply(z, _M_NP[i, 2], out=tmp)
            c += tmp
            _srgb255_into(c, tmp, low[:n])
        _combine(g8, rgb, out[r:r + n], t)
    return out


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
    g = np.ascontiguousarray(gray, np.uint8)
    planes = [np.array(np.asarray(rgb)[..., i], np.float32) for i in range(3)]
    out = np.empty(g.shape + (3,), np.uint8)
    return _combine(g, planes, out, np.empty(g.shape, np.float32))


_LUMA = (_F(0.299), _F(0.587), _F(0.114))
_TINY = _F(1e-30)


def _combine(gray: np.ndarray, rgb: list, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``combine_luma`` of (h,w) uint8 ``gray`` and three (h,w) float32 planes (overwritten)
    into ``out`` (h,w,3) uint8; ``y``: a float32 (h,w) scratch."""
    r, g, b = rgb
    np.copyto(y, gray)
    lum = np.multiply(r, _LUMA[0])
    lum += _LUMA[1] * g
    lum += _LUMA[2] * b
    for c in rgb:
        c -= lum  # chroma; luma 0
    # only the largest and the smallest offset of a pixel can leave [0, 255]; where all three
    # are 0 the clamped divisors give any t, which scales nothing
    hi = np.maximum(np.maximum(r, g), b)
    lo = np.minimum(np.minimum(r, g), b, out=lum)
    np.maximum(hi, _TINY, out=hi)
    np.minimum(lo, -_TINY, out=lo)
    t = np.divide(_F(255) - y, hi, out=hi)
    np.divide(np.negative(y), lo, out=lo)
    np.minimum(t, lo, out=t)
    np.clip(t, 0, 1, out=t)
    ints = []
    for c in rgb:
        c *= t
        c += y
        np.rint(c, out=c)
        np.clip(c, 0, 255, out=c)
        ints.append(c.astype(np.int32))
    # Rounding can move the PIL gray by one step: fix it with one channel, in PIL's own integer
    # arithmetic (gray = (sum_c w_c * v_c + 2^15) >> 16), at the few pixels where it moved.
    acc = ints[0] * _L24[0] + ints[1] * _L24[1] + ints[2] * _L24[2]
    yi = gray.astype(np.int32)
    bad = np.nonzero(((acc + 0x8000) >> 16) != yi)
    if bad[0].size:
        vals, a, yb = [v[bad] for v in ints], acc[bad], yi[bad]
        for c in (1, 0, 2):
            err = yb - ((a + 0x8000) >> 16)
            if not err.any():
                break
            nc = np.clip(vals[c] + err, 0, 255)
            a2 = a + _L24[c] * (nc - vals[c])
            ok = (err != 0) & (((a2 + 0x8000) >> 16) == yb)
            vals[c] = np.where(ok, nc, vals[c])
            a = np.where(ok, a2, a)
        for v, fixed in zip(ints, vals):
            v[bad] = fixed
    return cv2.merge([v.astype(np.uint8) for v in ints], dst=out)


AB_RANGE = 110.0


def ab_grid(bin_size: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """In-gamut ab cell centres (Q,2), a (G*G,) lookup from grid cell to nearest in-gamut
    class, and the grid side G. A cell is in gamut if some L in [0,100] maps it into sRGB.
    """
    axis = torch.arange(-AB_RANGE, AB_RANGE + 1e-6, bin_size)
    g = len(axis)
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    L = torch.linspace(0, 100, 101)
    lab = torch.stack([L.view(-1, 1, 1).expand(-1, g, g), a.expand(101, -1, -1), b.expand(101, -1, -1)], 1)
    rgb = lab_to_rgb(lab, clip=False)  # (101,3,g,g)
    ok = ((rgb >= -1e-3) & (rgb <= 1 + 1e-3)).all(1).any(0).flatten()
    grid = torch.stack([a.flatten(), b.flatten()], 1)
    centers = grid[ok]
    lut = torch.cdist(grid, centers).argmin(1)
    return centers, lut, g
