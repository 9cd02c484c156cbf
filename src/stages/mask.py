"""MaskDetector: where is the damage? A binary UNet on the damaged gray image."""
from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from .base import Stage
from .checkpoint import register_stage
from .metrics import mask_iou_f1
from .nets import build_unet, grow, pad_to_multiple, shrink
from .processors import MaskProcessor


@register_stage("mask")
class MaskDetector(Stage):
    """Damaged gray (B,1,H,W) in [0,1] -> mask logits (B,1,H,W).

    Loss: BCE + Dice. ``predict`` runs the network at most at ``work_size`` (the mask is a
    smooth shape), upsamples the probability, thresholds it and post-processes it at full
    resolution with ``processor`` (``stages.processors.MaskProcessor``: ``refine`` snaps the mask
    to a constant fill in [0, ``max_fill``], ``keep_largest`` keeps one component,
    ``fill_holes`` fills it). As the pipeline's ``scratch`` detector (``kind`` scratches),
    ``min_damage`` is the least share of the image its findings must cover for ``damage="auto"``
    to call a photo damaged at all (the first rule: leave undamaged photos alone); ``min_shape``
    the least share a constant-fill prediction must cover for ``auto`` to take it as a
    competition shape (a few dark pixels of a clipped shadow are not one).
    """

    architecture = ("arch", "encoder_name", "encoder_depth", "decoder_channels", "encoder_weights")
    training = ("bce_weight", "dice_weight")

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 32, 16, 8), encoder_weights: str | None = None,
                 bce_weight: float = 1.0, dice_weight: float = 1.0, threshold: float = 0.5,
                 keep_largest: bool = True, fill_holes: bool = True, work_size: int | None = None,
                 refine: bool = True, refine_band: int = 6, max_fill: int = 100, kind: str = "shape",
                 min_region: int = 0, detail_size: int | None = None, min_damage: float = 0.0,
                 min_shape: float = 0.0):
        super().__init__()
        MaskProcessor(kind=kind)  # validates the kind
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
    def detail_probabilities(self, gray: torch.Tensor) -> torch.Tensor:
        """The same at ``detail_size`` (None: full resolution), for thin scratches."""
        return grow(torch.sigmoid(self(shrink(gray, self.config["detail_size"])).float()), gray.shape[-2:])

    @property
    def needs_detail(self) -> bool:
        """Whether scratch-like damage gets a second pass at another size than ``work_size``."""
        return self.config["kind"] != "shape" and self.config["detail_size"] != self.config["work_size"]

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) bool mask (post-processed; scratch-like damage
        re-detected at ``detail_size``)."""
        thr, post = self.config["threshold"], self.processor
        masks = (self.probabilities(gray) > thr).cpu().numpy()
        g8 = (gray.float().cpu().numpy() * 255).round().astype(np.uint8)
        out = []
        for i, (m, g) in enumerate(zip(masks, g8)):
            kind = post.kind_of(m[0], g[0])
            if kind == "scratches" and self.needs_detail:
                m = (self.detail_probabilities(gray[i:i + 1])[0] > thr).cpu().numpy()
            out.append(post(m[0], g[0], kind)[None])
        return torch.from_numpy(np.stack(out)).to(gray.device)

    @property
    def processor(self) -> "MaskProcessor":
        """The post-processing of a thresholded mask (from this stage's inference settings)."""
        c = self.config
        return MaskProcessor(c["refine"], c["refine_band"], c["max_fill"], c["keep_largest"], c["fill_holes"],
                             c["kind"], c["min_region"], c["min_shape"])

    def postprocess(self, mask: np.ndarray, gray: np.ndarray | None = None) -> np.ndarray:
        """(H,W) bool (+ (H,W) uint8 gray) -> (H,W) bool: ``self.processor(mask, gray)``."""
        return self.processor(mask, gray)

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels: input gray | true mask | predicted mask, each (B,3,H,W) in [0,1]."""
        pred = self.predict(batch["gray"]).float()
        rep = lambda t: t.float().expand(-1, 3, -1, -1)  # noqa: E731
        return [rep(batch["gray"]), rep(batch["mask"]), rep(pred)]
