"""MaskDetector: where is the damage? A binary UNet on the damaged gray image."""
from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from scipy import ndimage

from .base import Stage, build_unet, pad_to_multiple, register_stage


@register_stage("mask")
class MaskDetector(Stage):
    """Damaged gray (B,1,H,W) in [0,1] -> mask logits (B,1,H,W).

    Loss: BCE + Dice. ``predict`` thresholds the probability and, with ``keep_largest``
    (competition images carry exactly one damaged shape), keeps the largest connected
    component and fills its holes.
    """

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 32, 16, 8), encoder_weights: str | None = None,
                 bce_weight: float = 1.0, dice_weight: float = 1.0, threshold: float = 0.5,
                 keep_largest: bool = True, fill_holes: bool = True):
        super().__init__(arch=arch, encoder_name=encoder_name, encoder_depth=encoder_depth,
                         decoder_channels=list(decoder_channels), encoder_weights=encoder_weights,
                         bce_weight=bce_weight, dice_weight=dice_weight, threshold=threshold,
                         keep_largest=keep_largest, fill_holes=fill_holes)
        self.net = build_unet(1, 1, arch, encoder_name, encoder_depth, decoder_channels, encoder_weights)
        self.multiple = 2 ** encoder_depth
        self.dice = smp.losses.DiceLoss(mode="binary", from_logits=True)

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(gray * 2 - 1, self.multiple)
        return self.net(x)[..., :h, :w]

    def loss(self, batch: dict) -> dict:
        logits = self(batch["gray"])
        target = batch["mask"]
        bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        dice = self.dice(logits.float(), target)
        loss = self.config["bce_weight"] * bce + self.config["dice_weight"] * dice
        return {"loss": loss, "bce": bce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        pred = self.predict(batch["gray"])
        from pipeline.metrics import mask_iou_f1
        iou, f1 = zip(*(mask_iou_f1(t[0].cpu().numpy() > 0.5, p[0].cpu().numpy())
                        for t, p in zip(batch["mask"], pred)))
        return {"iou": float(np.mean(iou)), "f1": float(np.mean(f1))}

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) bool mask (post-processed)."""
        prob = torch.sigmoid(self(gray).float())
        masks = (prob > self.config["threshold"]).cpu().numpy()
        out = np.stack([self.postprocess(m[0])[None] for m in masks])
        return torch.from_numpy(out).to(gray.device)

    def postprocess(self, mask: np.ndarray) -> np.ndarray:
        """(H,W) bool -> (H,W) bool: largest component (optional), holes filled (optional)."""
        if self.config["keep_largest"] and mask.any():
            lab, n = ndimage.label(mask)
            if n > 1:
                mask = lab == (np.bincount(lab.ravel())[1:].argmax() + 1)
        if self.config["fill_holes"]:
            mask = ndimage.binary_fill_holes(mask)
        return mask

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        pred = self.predict(batch["gray"]).float()
        rep = lambda t: t.float().expand(-1, 3, -1, -1)  # noqa: E731
        return [rep(batch["gray"]), rep(batch["mask"]), rep(pred)]
