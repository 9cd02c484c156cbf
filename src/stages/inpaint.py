"""Inpainter: fill the damaged region of a gray image; pixels outside the mask are kept."""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from .base import Stage, register_stage
from .color import fp32
from .fourier import add_fourier_blocks
from .nets import TTA_SIZES, build_unet, gray_batch, grow, pad_to_multiple, shrink, tiled, tta_mean
from .processors import Reference, TeleaPrefill

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)  # scipy's binary_dilation structure


@register_stage("inpaint")
class Inpainter(Stage):
    """(gray (B,1,H,W) in [0,1], mask (B,1,H,W) in {0,1}) -> composited gray (B,1,H,W) in [0,1].

    ``prefill`` decides what the network sees in the hole (plus the mask, 2 channels):
    ``telea`` (default): OpenCV Telea inpainting of the hole; the network predicts a correction
    added to it, from a zero-initialised head, so training starts at Telea's quality.
    ``constant``: the hole blanked to 0.5; the network predicts the gray (sigmoid).
    The output is ``mask * prediction + (1 - mask) * gray``.
    ``fourier_blocks`` > 0 adds that many LaMa-style Fourier convolution blocks (``stages.fourier``)
    on encoder feature ``fourier_level`` (stride 2^level): a receptive field of the whole image,
    for periodic structure across large holes.
    ``inpaint`` is the whole inference, what every caller runs. Inference settings: ``context``
    (pixels of surroundings the network sees around the damaged region), ``work_size`` (the
    network runs at most at this size; None: full size, tiled), ``tta`` (1/2/4/8: average the
    prediction over that many flips/transposes), ``dilate`` and ``telea_radius`` (the mask grown
    and the Telea prefill, as in training), ``thin`` (where the hole is thinner than this many
    pixels, a crack or a scratch, Telea's fill is kept: it carries the grain of both banks, where
    the network smooths it; None: the network everywhere), ``window_step`` (the window around the
    damage grows, inside the image, to a square whose side is a multiple of this many pixels: the
    network meets a few input shapes, and an inference engine prepares each new shape once, ~30 ms
    on a CPU; None: the tight window).
    Loss: L1 weighted towards the hole + ``ssim_weight * (1 - SSIM)`` of the composite
    + ``hole_ssim_weight * (1 - hole SSIM)``, where the hole SSIM is the competition's M term
    on gray: SSIM over the hole's pixels in raster order, as one 1-D signal with a 7-wide window
    (see ``hole_ssim``). M rewards local contrast along rows that plain L1 smooths away.
    """

    net_in_channels = 2  # prefilled gray, mask
    architecture = ("arch", "encoder_name", "encoder_depth", "decoder_channels", "encoder_weights", "prefill",
                    "fourier_blocks", "fourier_level")
    inference = ("dilate", "work_size", "telea_radius", "tta", "context", "thin", "window_step")
    training = ("hole_weight", "valid_weight", "ssim_weight", "hole_ssim_weight")

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 32, 16, 8), encoder_weights: str | None = None,
                 hole_weight: float = 6.0, valid_weight: float = 1.0, ssim_weight: float = 1.0,
                 dilate: int = 0, work_size: int | None = None, prefill: str = "telea",
                 telea_radius: int = TeleaPrefill.radius, hole_ssim_weight: float = 0.0, fourier_blocks: int = 0,
                 fourier_level: int = 3, tta: int = 1, context: int = 64, thin: float | None = 3.0,
                 window_step: int | None = 128):
        if prefill not in ("telea", "constant"):
            raise ValueError(f"prefill must be 'telea' or 'constant', got {prefill!r}")
        if tta not in TTA_SIZES:
            raise ValueError(f"tta must be one of {TTA_SIZES}, got {tta!r}")
        super().__init__()
        self.multiple = 2 ** encoder_depth

        def build():
            net = build_unet(2, 1, arch, encoder_name, encoder_depth, decoder_channels, encoder_weights)
            add_fourier_blocks(net, int(fourier_level), int(fourier_blocks))
            if prefill == "telea":
                head = net.segmentation_head[0]
                torch.nn.init.zeros_(head.weight)
                torch.nn.init.zeros_(head.bias)
            return net
        self._set_net(build)

    def _grow(self, mask: torch.Tensor) -> torch.Tensor:
        k = int(self.config["dilate"])
        return F.max_pool2d(mask, 2 * k + 1, 1, k) if k > 0 else mask

    def prefilled(self, gray: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] with the hole filled per ``prefill`` (no gradient)."""
        if self.config["prefill"] == "constant":
            return gray * (1 - mask) + 0.5 * mask
        return TeleaPrefill(int(self.config["telea_radius"]))(gray, mask)

    def sample_transform(self):
        """What training data workers may precompute per sample: the Telea prefill (when the
        network sees the true mask as is), else None."""
        if self.config["prefill"] == "telea" and not self.config["dilate"]:
            return TeleaPrefill(int(self.config["telea_radius"])).sample
        return None

    def forward(self, base: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The network: prefilled gray ``base`` (B,1,H,W) in [0,1] + mask -> the full gray
        (B,1,H,W), ~[0,1], before compositing (a correction added to ``base`` for ``telea``)."""
        mask = mask.to(base.dtype)
        x = torch.cat([base * 2 - 1, mask * 2 - 1], 1)
        x, (h, w) = pad_to_multiple(x, self.multiple)
        y = self.run_net(x)[..., :h, :w]
        return base + y if self.config["prefill"] == "telea" else torch.sigmoid(y)

    def _predict_full(self, gray: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(gray.dtype)
        return self(self.prefilled(gray, mask), mask)

    def composite(self, gray: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask * prediction + (1 - mask) * gray``; the network runs at most at ``work_size``
        (on an area-downscaled copy whose mask covers every partly damaged pixel)."""
        mask = mask.to(gray.dtype)
        ws = self.config["work_size"]
        g, m = shrink(torch.cat([gray, mask], 1), ws).split(1, 1)  # one pass over both
        if m.shape != mask.shape:
            m = (m > 0).to(gray.dtype)
            g = g * (1 - m) + 0.5 * m   # keep fill-value bleed out of the small copy
        pred = grow(tta_mean(self._predict_full, (g, self._grow(m)), int(self.config["tta"])), gray.shape[-2:])
        return mask * pred + (1 - mask) * gray

    def loss(self, batch: dict) -> dict:
        """``hole_weight`` * L1(hole) + ``valid_weight`` * L1(rest) + ``ssim_weight`` * (1 - SSIM)."""
        gray, mask, target = batch["gray"], batch["mask"], batch["target_gray"]
        grown = self._grow(mask)
        base = batch["prefilled"] if "prefilled" in batch and grown is mask else self.prefilled(gray, grown.to(gray.dtype))
        pred = self(base, grown).float()
        err = (pred - target).abs()
        hole = (err * mask).sum() / mask.sum().clamp(min=1)
        valid = (err * (1 - mask)).sum() / (1 - mask).sum().clamp(min=1)
        comp = mask * pred + (1 - mask) * target
        # SSIM's variances (E[x^2] - mu^2) cancel catastrophically in bf16: keep it in fp32
        s = fp32(ssim)(comp.float(), target.float(), data_range=1.0, size_average=True,
                       win=_ssim_window(min(11, _odd(gray.shape[-1])), comp.device))
        loss = (self.config["hole_weight"] * hole + self.config["valid_weight"] * valid
                + self.config["ssim_weight"] * (1 - s))
        terms = {"l1_hole": hole.detach(), "l1_valid": valid.detach(), "ssim": s.detach()}
        if self.config["hole_ssim_weight"] > 0:
            hs = fp32(hole_ssim)(pred.float(), target.float(), mask)
            loss = loss + self.config["hole_ssim_weight"] * (1 - hs)
            terms["hole_ssim"] = hs.detach()
        return {"loss": loss, **terms}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """L1 and PSNR over the hole of the composited prediction."""
        mask, target = batch["mask"], batch["target_gray"]
        out = self.predict(batch["gray"], mask)
        n = mask.sum().clamp(min=1)
        l1 = ((out - target).abs() * mask).sum() / n
        mse = (((out - target) ** 2) * mask).sum() / n
        return {"l1_hole": float(l1), "psnr_hole": float(10 * torch.log10(1 / mse.clamp(min=1e-10)))}

    @torch.inference_mode()
    def inpaint(self, gray: np.ndarray, mask: np.ndarray, *, context: int | None = None,
                tile: tuple[int, int] = (1024, 128), reference: Reference | None = None) -> np.ndarray:
        """(H,W) uint8 gray + (H,W) bool mask -> (H,W) uint8, equal to ``gray`` outside the mask.
        Only a window around the damage (plus ``context`` pixels; None: the setting) goes through
        the network; ``tile``: (size, overlap) of the tiles a full-size pass runs in.
        ``reference``: where it covers the hole, the hole's gray is its (tone-matched) gray; the
        network fills the rest."""
        if reference is not None and (mask & reference.valid).any():
            covered = mask & reference.valid
            gray, mask = gray.copy(), mask & ~covered
            gray[covered] = reference.gray[covered]
        if not mask.any():
            return gray.copy()
        c = self.config["context"] if context is None else int(context)
        grown = cv2.dilate(mask.astype(np.uint8), _CROSS).astype(bool) if mask.sum() < 4 else mask
        ys, xs = np.flatnonzero(grown.any(1)), np.flatnonzero(grown.any(0))
        y0, y1 = max(0, ys[0] - c), min(gray.shape[0], ys[-1] + 1 + c)
        x0, x1 = max(0, xs[0] - c), min(gray.shape[1], xs[-1] + 1 + c)
        if self.config["window_step"]:
            step = int(self.config["window_step"])
            side = -(-max(y1 - y0, x1 - x0) // step) * step
            (y0, y1), (x0, x1) = _span(y0, y1, side, gray.shape[0]), _span(x0, x1, side, gray.shape[1])
        region = mask[y0:y1, x0:x1]
        g, m = gray_batch([gray[y0:y1, x0:x1], region.astype(np.uint8) * 255], self.device).split(1)
        if self.config["work_size"]:
            out = self.composite(g, m)
        else:
            out = tiled(lambda t: self.composite(t[:, :1], t[:, 1:]), torch.cat([g, m], 1), *tile)
        patch = np.clip(np.rint(out[0, 0].float().cpu().numpy() * 255), 0, 255).astype(np.uint8)
        if self.config["thin"]:
            patch = self._thin_telea(gray[y0:y1, x0:x1], region, patch, float(self.config["thin"]))
        result = gray.copy()
        result[y0:y1, x0:x1][region] = patch[region]
        return result

    def _thin_telea(self, window: np.ndarray, region: np.ndarray, patch: np.ndarray, thin: float) -> np.ndarray:
        """(h,w) uint8 gray, bool hole, uint8 network fill -> the fill with Telea's where the hole's
        local thickness (its deepest point within 3 px) is under ``thin`` - 1 px, blended over the
        next pixel. Telea starts from the network's fill of the thick parts, so they join."""
        depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
        w = np.clip(cv2.dilate(depth, np.ones((7, 7), np.uint8)) - (thin - 1), 0, 1)
        part = region & (w < 1)
        if not part.any():
            return patch
        filled = np.where(region, patch, window)
        telea = cv2.inpaint(filled, part.astype(np.uint8), int(self.config["telea_radius"]), cv2.INPAINT_TELEA)
        return np.where(part, np.rint(w * patch + (1 - w) * telea), patch).astype(np.uint8)

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] + (B,1,H,W) mask -> (B,1,H,W) in [0,1]: ``inpaint`` on the
        uint8 rounding of each image; identical to ``gray`` where ``mask`` is 0."""
        g8 = (gray[:, 0].float().cpu().numpy() * 255).round().astype(np.uint8)
        m = (mask[:, 0] > 0.5).cpu().numpy()
        out = np.stack([self.inpaint(g, k) for g, k in zip(g8, m)])
        filled = torch.from_numpy(out).to(gray.device, torch.float32)[:, None] / 255
        return torch.where(mask > 0.5, filled, gray.float())

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels: damaged gray | true gray | inpainted gray, each (B,3,H,W) in [0,1]."""
        out = self.predict(batch["gray"], batch["mask"])
        rep = lambda t: t.float().expand(-1, 3, -1, -1)  # noqa: E731
        return [rep(batch["gray"]), rep(batch["target_gray"]), rep(out)]


def _span(a: int, b: int, side: int, n: int) -> tuple[int, int]:
    """[a, b) grown about its centre to ``side`` pixels, shifted to lie in [0, n) (all of it when
    ``side`` >= n)."""
    if side >= n:
        return 0, n
    a = min(max(0, a - (side - (b - a)) // 2), n - side)
    return a, a + side


def hole_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, win: int = 7) -> torch.Tensor:
    """Differentiable M term on gray, averaged over the batch.

    pred, target: (B,1,H,W) in [0,1]; mask: (B,1,H,W) in {0,1}. For each image the hole's pixels
    are read in raster order into a 1-D signal and compared with skimage's SSIM formula (uniform
    ``win``-wide window, sample covariance, data range 1, edges cropped), as the competition does
    on the (N,3) array of damaged pixels. Images whose hole has fewer than ``win`` pixels are
    skipped (a zero-size batch gives 1). Static shapes only: the holes are packed to the front of
    (B,H*W) rows and windows past each hole's end are masked, so the host never waits on the device.
    """
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    cov_norm = win / (win - 1)
    b, n = pred.shape[0], pred[0].numel()
    sel = mask.reshape(b, n) > 0.5
    length = sel.sum(1)
    pos = torch.where(sel, sel.cumsum(1) - 1, n)  # where each hole pixel goes; the rest to a dump slot

    def packed(v):
        return v.new_zeros(b, n + 1).scatter(1, pos, v.reshape(b, n))[:, :n, None].transpose(1, 2)

    x, y = packed(pred), packed(target)
    mean = lambda v: F.avg_pool1d(v, win, 1)[:, 0]  # noqa: E731
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    inside = (torch.arange(s.shape[1], device=s.device)[None] <= (length - win)[:, None]).to(s.dtype)
    per_image = (s * inside).sum(1) / inside.sum(1).clamp(min=1)
    counted = (length >= win).to(s.dtype)
    return torch.where(counted.sum() > 0, (per_image * counted).sum() / counted.sum().clamp(min=1), s.new_ones(()))


@functools.lru_cache(maxsize=None)
def _ssim_window(size: int, device: torch.device) -> torch.Tensor:
    """pytorch_msssim's 1-D Gaussian window (sigma 1.5), made once per device (not every step)."""
    coords = torch.arange(size, dtype=torch.float) - size // 2
    g = torch.exp(-(coords ** 2) / (2 * 1.5 ** 2))
    return (g / g.sum()).view(1, 1, 1, size).to(device)  # (channels, 1, 1, size) for a 1-channel image


def _odd(n: int) -> int:
    return n if n % 2 else n - 1
