"""Fourier convolution blocks (LaMa, Suvorov et al. 2022): a 1x1 convolution applied in the
frequency domain sees the whole feature map at once, so periodic structure (bricks, fences,
windows, railings) can be continued across a large hole.

The real 2-D DFT is written as matrix products with cos/sin tables built from the input's shape
(``rdft2`` / ``irdft2``, equal to ``torch.fft.rfft2`` / ``irfft2`` up to float rounding): unlike
``torch.fft`` it exports to ONNX with dynamic sizes and runs in OpenVINO and ONNX Runtime.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .color import fp32


def _tables(n: int, k: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos and sin of 2π·f·t/n for f < k, t < n (two (k, n) tensors, dtype/device of ``like``)
    and the frequencies f (k,). ``n`` is taken from ``arange(n)`` itself so that an ONNX export
    keeps it a function of the input's shape, not a constant of the example input."""
    t = torch.arange(n, device=like.device, dtype=torch.float32)
    f = torch.arange(k, device=like.device, dtype=torch.float32)
    ang = (f[:, None] * t[None, :]) * (2 * math.pi) / (t[-1] + 1)
    return torch.cos(ang).to(like.dtype), torch.sin(ang).to(like.dtype), f


def rdft2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,C,H,W) real -> real and imaginary parts (B,C,H,W//2+1) of ``torch.fft.rfft2(x)``."""
    h, w = x.shape[-2], x.shape[-1]
    cw, sw, _ = _tables(w, w // 2 + 1, x)
    ch, sh, _ = _tables(h, h, x)
    xr, xi = x @ cw.T, -(x @ sw.T)               # along W (real input)
    return ch @ xr + sh @ xi, ch @ xi - sh @ xr  # along H (complex): (ch - i·sh)(xr + i·xi)


def irdft2(re: torch.Tensor, im: torch.Tensor, w: int) -> torch.Tensor:
    """Inverse of ``rdft2``: (B,C,H,W//2+1) parts -> (B,C,H,w) real, as ``torch.fft.irfft2``."""
    h, k = re.shape[-2], re.shape[-1]
    ch, sh, fh = _tables(h, h, re)
    n_h = (fh[-1] + 1).to(re.dtype)
    zr, zi = (ch @ re - sh @ im) / n_h, (ch @ im + sh @ re) / n_h  # inverse along H: (ch + i·sh)/h
    cw, sw, f = _tables(w, k, re)
    n_w = (torch.arange(w, device=re.device, dtype=torch.float32)[-1] + 1)
    # each frequency but DC (and Nyquist for even w) also stands for its mirror image
    wt = (2.0 - (f == 0).float() - (2 * f == n_w).float()).to(re.dtype)[:, None] / n_w.to(re.dtype)
    return zr @ (cw * wt) - zi @ (sw * wt)


class SpectralTransform(nn.Module):
    """(B,C,H,W) -> (B,C,H,W): 1x1 conv + BN + ReLU on the stacked real/imaginary spectrum."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 1, bias=False),
                                  nn.BatchNorm2d(2 * channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the DFTs sum a whole row or column: in fp32 even under fp16/bf16 autocast (fp16 loses
        # the low frequencies' precision and can overflow); the 1x1 conv between them follows autocast
        re, im = fp32(rdft2)(x.float())
        re, im = self.conv(torch.cat([re, im], 1)).chunk(2, 1)
        return fp32(irdft2)(re.float(), im.float(), x.shape[-1]).to(x.dtype)


class FourierBlock(nn.Module):
    """Residual block with a local (3x3) and a global (spectral) branch, LaMa's FFC in short:
    ``x + proj([local(r), spectral(r)])`` with ``r = reduce(x)``. ``proj`` starts at zero, so a
    block added to a trained network leaves its output unchanged until training moves it."""

    def __init__(self, channels: int):
        super().__init__()
        h = max(8, channels // 2)
        self.reduce = nn.Sequential(nn.Conv2d(channels, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
        self.local = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True))
        self.spectral = SpectralTransform(h)
        self.proj = nn.Conv2d(2 * h, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        return x + self.proj(torch.cat([self.local(r), self.spectral(r)], 1))


def add_fourier_blocks(net: nn.Module, level: int, blocks: int) -> None:
    """Insert ``blocks`` FourierBlocks on encoder feature ``level`` of an smp model (0 = the input,
    k = stride 2^k) as ``net.fourier``. A forward hook on the encoder applies them, so the existing
    parameter names (and checkpoints without the blocks) stay as they are."""
    if blocks <= 0:
        return
    channels = net.encoder.out_channels
    if not 0 < level < len(channels):
        raise ValueError(f"fourier_level must be in 1..{len(channels) - 1}, got {level}")
    net.fourier = nn.Sequential(*[FourierBlock(channels[level]) for _ in range(blocks)])
    net.encoder.register_forward_hook(_ApplyToFeature(net.fourier, level))


class _ApplyToFeature:
    """Encoder forward hook: ``features[level] = blocks(features[level])``. An object holding the
    blocks, not a closure over ``net``: ``copy.deepcopy(net)`` (as ONNX export does) then hooks
    the copy's blocks, not the original's."""

    def __init__(self, blocks: nn.Module, level: int):
        self.blocks, self.level = blocks, level

    def __call__(self, _module, _inputs, features):
        features = list(features)
        features[self.level] = self.blocks(features[self.level])
        return features
