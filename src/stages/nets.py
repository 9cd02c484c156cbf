"""Network building and the tensor geometry around it: the segmentation-models-pytorch UNet of
every stage, uint8 arrays to tensors and back, padding to the encoder's stride, work-size
shrinking/growing, dihedral TTA, and overlapping tiles for large images."""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn


def build_unet(in_channels: int, classes: int, arch: str = "Unet", encoder_name: str = "resnet18",
               encoder_depth: int = 5, decoder_channels=(256, 128, 64, 32, 16),
               encoder_weights: str | None = None) -> nn.Module:
    """An segmentation-models-pytorch network. ``encoder_weights`` other than None downloads
    pretrained weights; offline that fails with one clear ``RuntimeError`` line.
    """
    import segmentation_models_pytorch as smp

    decoder_channels = list(decoder_channels)
    if len(decoder_channels) != encoder_depth:
        raise ValueError(f"decoder_channels needs {encoder_depth} entries (encoder_depth), "
                         f"got {len(decoder_channels)}")
    kwargs = dict(encoder_name=encoder_name, encoder_depth=encoder_depth, in_channels=in_channels,
                  classes=classes, encoder_weights=None)
    if arch.lower() in ("unet", "unetplusplus"):
        kwargs["decoder_channels"] = decoder_channels
    if not encoder_weights:
        return smp.create_model(arch, **kwargs)
    import logging
    import socket
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)  # one line from us, not retries
    try:
        socket.getaddrinfo("huggingface.co", 443)  # fail fast offline instead of retrying for ~30 s
        return smp.create_model(arch, **{**kwargs, "encoder_weights": encoder_weights})
    except Exception as e:  # network errors come in many types (URLError, HF hub, OSError ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"cannot fetch {encoder_weights!r} weights for encoder {encoder_name!r} "
                           f"(offline? use model.encoder_weights=null): {msg}") from None


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad (B,C,H,W) at the bottom/right to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B,C,H,W) float -> the same blurred by a Gaussian of ``sigma`` px (kernel ±3 sigma,
    edges reflected; torchvision's, the same in training and inference)."""
    from torchvision.transforms.v2.functional import gaussian_blur as blur
    k = 2 * max(1, int(np.ceil(3 * sigma))) + 1
    h, w = x.shape[-2:]
    if min(h, w) <= k // 2:  # reflection needs more pixels than the kernel's radius: extend a tiny image's edge first
        big = torch.nn.functional.pad(x, (0, max(0, k // 2 + 1 - w), 0, max(0, k // 2 + 1 - h)), mode="replicate")
        return blur(big, [k, k], [float(sigma), float(sigma)])[..., :h, :w]
    return blur(x, [k, k], [float(sigma), float(sigma)])


def shrink(x: torch.Tensor, work_size: int | None) -> torch.Tensor:
    """Area-downscale (B,C,H,W) so its longer side is at most ``work_size`` (None: unchanged)."""
    h, w = x.shape[-2:]
    if not work_size or max(h, w) <= work_size:
        return x
    s = work_size / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    k = h // size[0]
    if size[0] * k == h and size[1] * k == w:  # an integer factor: the same average, ~2x faster
        if _by_opencv(x, size):
            return _opencv_planes(x, size, cv2.INTER_AREA)
        return torch.nn.functional.avg_pool2d(x, k)
    return torch.nn.functional.interpolate(x, size=size, mode="area")


def _by_opencv(x: torch.Tensor, size) -> bool:
    """Whether a resize of ``x`` may run in OpenCV: a float32 CPU tensor outside autograd. On one
    CPU core OpenCV resizes a 512x512 plane ~4x (bilinear) to ~6x (2x2 average) faster than
    torch, to within float rounding."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and not (torch.is_grad_enabled() and x.requires_grad) and max(*size, *x.shape[-2:]) < 32768)


def _opencv_planes(x: torch.Tensor, size, interpolation: int) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,*size), each plane resized by ``cv2.resize``."""
    src = x.detach().contiguous().numpy()
    out = torch.empty(*x.shape[:2], *size)
    dst = out.numpy()
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            cv2.resize(src[i, j], (size[1], size[0]), dst=dst[i, j], interpolation=interpolation)
    return out


TTA_SIZES = (1, 2, 4, 8)


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """One of the 8 flips/transposes of (..., H, W) (bit 0: mirror W, bit 1: flip H, bit 2:
    transpose, applied first), or its inverse."""
    if k & 4 and not inverse:
        x = x.transpose(-1, -2)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4 and inverse:
        x = x.transpose(-1, -2)
    return x


def tta_mean(fn, inputs: tuple, n: int) -> torch.Tensor:
    """Mean of ``fn(*inputs)`` over the first ``n`` (1, 2, 4 or 8) of the dihedral transforms
    of ``inputs`` (2: + mirror; 4: + vertical flips; 8: + transposes), each output transformed
    back. ``fn`` must map (B,C,H,W) inputs to a (B,C',H',W') output on the same grid (any
    stride); one batched call per input shape."""
    if n not in TTA_SIZES:
        raise ValueError(f"tta must be one of {TTA_SIZES}, got {n}")
    if n == 1:
        return fn(*inputs)
    b, out = inputs[0].shape[0], 0
    for ks in ([k for k in range(n) if k < 4], [k for k in range(n) if k >= 4]):
        if ks:
            y = fn(*[torch.cat([dihedral(t, k) for k in ks]) for t in inputs])
            for i, k in enumerate(ks):
                out = out + dihedral(y[i * b:(i + 1) * b], k, inverse=True)
    return out / n


def grow(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsample (B,C,h,w) to ``size`` (no-op when already that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if _by_opencv(x, size):  # the same sampling (pixel centres, edges replicated)
        return _opencv_planes(x, tuple(size), cv2.INTER_LINEAR)
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def gray_batch(grays: list, device: torch.device) -> torch.Tensor:
    """Same-size (H,W) uint8 arrays -> (B,1,H,W) float in [0,1] on ``device``."""
    x = np.divide(np.stack(grays)[:, None], np.float32(255), dtype=np.float32)
    return torch.from_numpy(x).to(device)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B,1,H,W) float in [0,1] -> (B,H,W) uint8, rounded."""
    return (x[:, 0].float().cpu().numpy() * 255).round().astype(np.uint8)


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


def _pooled_head(net: torch.nn.Module, out: int, stride: int, zero: bool = False) -> torch.nn.Module:
    """``net`` with its segmentation head replaced by a 1x1 convolution to ``out`` channels on
    ``stride``-pooled features (``zero``: starting at zero). Colour is smooth: softmax/cross-entropy
    over ~227 classes at full resolution would cost more than the rest of the network."""
    conv = torch.nn.Conv2d(net.segmentation_head[0].in_channels, out, kernel_size=1)
    if zero:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    net.segmentation_head[0] = torch.nn.Sequential(
        torch.nn.AvgPool2d(stride) if stride > 1 else torch.nn.Identity(), conv)
    return net
