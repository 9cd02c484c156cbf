"""MaskDetector: where is the damage? A binary UNet on the damaged gray image."""
from __future__ import annotations

import cv2
import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from pipeline.damage import fill_holes, label4
from pipeline.metrics import mask_iou_f1

from .base import Stage, build_unet, grow, pad_to_multiple, register_stage, shrink


@register_stage("mask")
class MaskDetector(Stage):
    """Damaged gray (B,1,H,W) in [0,1] -> mask logits (B,1,H,W).

    Loss: BCE + Dice. ``predict`` runs the network at most at ``work_size`` (the mask is a
    smooth shape), upsamples the probability, thresholds it and post-processes at full
    resolution: ``refine`` snaps the mask to the constant fill (when most predicted pixels share
    one gray in [0, ``max_fill``], the mask becomes the connected regions of that gray touching
    the prediction; a region leaking far beyond it is clipped to ``refine_band`` px),
    ``keep_largest`` keeps one component (competition images carry exactly one shape) and
    ``fill_holes`` fills it.
    """

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 32, 16, 8), encoder_weights: str | None = None,
                 bce_weight: float = 1.0, dice_weight: float = 1.0, threshold: float = 0.5,
                 keep_largest: bool = True, fill_holes: bool = True, work_size: int | None = None,
                 refine: bool = True, refine_band: int = 6, max_fill: int = 100):
        super().__init__(arch=arch, encoder_name=encoder_name, encoder_depth=encoder_depth,
                         decoder_channels=list(decoder_channels), encoder_weights=encoder_weights,
                         bce_weight=bce_weight, dice_weight=dice_weight, threshold=threshold,
                         keep_largest=keep_largest, fill_holes=fill_holes, work_size=work_size,
                         refine=refine, refine_band=refine_band, max_fill=max_fill)
        self.net = build_unet(1, 1, arch, encoder_name, encoder_depth, decoder_channels, encoder_weights)
        self.multiple = 2 ** encoder_depth
        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) damage logits (any H, W: padded inside)."""
        x, (h, w) = pad_to_multiple(gray * 2 - 1, self.multiple)
        return self.run_net(x)[..., :h, :w]

    def loss(self, batch: dict) -> dict:
        """BCE + Dice of the logits of ``batch["gray"]`` against ``batch["mask"]``."""
        logits = self(batch["gray"])
        target = batch["mask"]
        bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        dice = self.dice(logits.float(), target)
        loss = self.config["bce_weight"] * bce + self.config["dice_weight"] * dice
        return {"loss": loss, "bce": bce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """Mean IoU and F1 of the post-processed prediction."""
        pred = self.predict(batch["gray"]).cpu().numpy()
        iou, f1 = zip(*(mask_iou_f1(t[0].cpu().numpy() > 0.5, p[0]) for t, p in zip(batch["mask"], pred)))
        return {"iou": float(np.mean(iou)), "f1": float(np.mean(f1))}

    @torch.inference_mode()
    def probabilities(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) damage probability (network at ``work_size``)."""
        return grow(torch.sigmoid(self(shrink(gray, self.config["work_size"])).float()), gray.shape[-2:])

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) bool mask (post-processed)."""
        masks = (self.probabilities(gray) > self.config["threshold"]).cpu().numpy()
        g8 = (gray.float().cpu().numpy() * 255).round().astype(np.uint8)
        out = np.stack([self.postprocess(m[0], g[0])[None] for m, g in zip(masks, g8)])
        return torch.from_numpy(out).to(gray.device)

    def postprocess(self, mask: np.ndarray, gray: np.ndarray | None = None) -> np.ndarray:
        """(H,W) bool (+ (H,W) uint8 gray) -> (H,W) bool: refined, largest component, filled."""
        if self.config["refine"] and gray is not None and mask.any():
            mask = self.refine(mask, gray)  # before keep_largest: a fragmented prediction still
        if self.config["keep_largest"] and mask.any():  # names the whole fill region
            mask = _largest(mask)
        if self.config["fill_holes"]:
            mask = fill_holes(mask)
        return mask

    def refine(self, mask: np.ndarray, gray: np.ndarray) -> np.ndarray:
        """Snap a predicted mask to the constant fill it covers (see the class docstring)."""
        vals = gray[mask]
        counts = np.bincount(vals, minlength=256)
        v = int(counts.argmax())
        if v > self.config["max_fill"] or counts[v] < 0.6 * len(vals):
            return mask  # not a constant fill (textured damage): keep the network's mask
        # Components of the fill value touching the prediction are taken whole when most of
        # them lies near it or they are not much larger than it (the network under-segmented),
        # and clipped to a thin band when they
        # leak far away (the fill touches surroundings of the same gray).
        r = max(self.config["refine_band"], 0.5 * np.sqrt(mask.sum()))
        near, band = _within(mask, r, self.config["refine_band"])
        cand = gray == v
        lab, n = label4(cand)
        size = np.bincount(lab.ravel(), minlength=n + 1)
        touch = np.bincount(lab[mask & cand], minlength=n + 1) > 0
        inside = np.bincount(lab[near], minlength=n + 1)
        touch[0] = False
        whole = touch & ((inside >= 0.5 * size) | (size <= 3 * mask.sum()))
        part = touch & ~whole
        if not touch.any():
            return mask
        refined = fill_holes(whole[lab] | (part[lab] & band))
        inter = np.logical_and(refined, mask).sum()
        return refined if inter >= 0.5 * mask.sum() else mask

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels: input gray | true mask | predicted mask, each (B,3,H,W) in [0,1]."""
        pred = self.predict(batch["gray"]).float()
        rep = lambda t: t.float().expand(-1, 3, -1, -1)  # noqa: E731
        return [rep(batch["gray"]), rep(batch["mask"]), rep(pred)]


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = label4(mask)
    if n <= 1:
        return mask
    return lab == (np.bincount(lab.ravel())[1:].argmax() + 1)


def _within(mask: np.ndarray, *radii: float) -> list[np.ndarray]:
    """For each radius r, the (H,W) bool pixels within Euclidean distance r of ``mask`` (one
    distance transform over its bounding box grown by the largest r, not the whole image)."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    m = int(np.ceil(max(radii))) + 1
    y0, y1 = max(0, ys[0] - m), min(mask.shape[0], ys[-1] + 1 + m)
    x0, x1 = max(0, xs[0] - m), min(mask.shape[1], xs[-1] + 1 + m)
    # OpenCV's exact (DIST_MASK_PRECISE) Euclidean transform: the distance of each non-zero
    # pixel to the nearest zero one, ~10x faster than scipy's
    dist = cv2.distanceTransform((~mask[y0:y1, x0:x1]).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outs = []
    for r in radii:
        out = np.zeros_like(mask)
        out[y0:y1, x0:x1] = dist <= r
        outs.append(out)
    return outs
