"""MaskDetector: where is the damage? A binary UNet on the damaged gray image, and the whole
detection around it (``detect``: work size, threshold, the kind of damage, post-processing)."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .base import Stage, register_stage
from .metrics import mask_iou_f1
from .nets import (TTA_SIZES, build_unet, dihedral, gaussian_blur, gray_batch, grow, pad_to_multiple, shrink, tiled,
                   tta_mean)
from .processors import KINDS, MaskProcessor

_P = MaskProcessor  # the post-processing's defaults are its fields' (one home)
# a turned view -> the dihedral transform of stages.nets.dihedral (rot90: a quarter turn clockwise)
VIEWS = {"mirror": 1, "flip": 2, "rot180": 3, "transpose": 4, "rot90": 5, "rot270": 6, "antitranspose": 7}


@register_stage("mask")
class MaskDetector(Stage):
    """Damaged gray (B,1,H,W) in [0,1] -> mask logits (B,1,H,W). Loss: BCE + Dice.

    ``detect`` is the whole inference, what every caller runs (the Pipeline, ``upstream=``
    training, ``metrics``). Inference settings: ``threshold`` on the probability; ``work_size``
    (the network sees the gray shrunk to at most this; a competition shape is smooth) and
    ``detail_size`` (the same for the scratch path; None: full size, tiled); ``kind``, the damage
    looked for when the caller names none; the post-processing of ``stages.processors.MaskProcessor``
    (``refine``, ``refine_band``, ``max_fill``, ``keep_largest``, ``fill_holes``, ``min_region``,
    ``min_shape``); ``scales``, the sizes (× the image) the scratch path looks at, the highest
    probability kept (above 1 only while the long side stays within 2048 px: a small scan's 1-px
    cracks become 2-px ones, as the network saw them in training; below 1 only while the short
    side stays 128 px or more); ``tta`` (1/2/4/8), the flips and transposes whose probabilities
    are averaged (``stages.nets.tta_mean``); ``smooth`` (px, 0: off), a Gaussian blur of the gray
    the scratch network sees (a scan's fine noise hides cracks from it; for a network trained
    without ``input_blur``). In a pipeline, which damage is kept is its damage policy's business
    (``pipeline.policy.DamagePolicy``): this stage gives it probability maps
    (``scratch_probabilities``, ``view_probabilities``).

    ``input_blur`` (px, 0: off) is part of the network, in training as at inference: a Gaussian
    blur of its input gray, so that a scan's fine noise looks like the training photos' (trained
    with it, the network keeps finding the thin cracks the blur softens). ``input_sharp`` (with
    ``input_blur``) gives the network the unblurred gray as well, a second input channel after
    the blurred one (a network trained with the blur alone continues with it at zero weight).
    """

    architecture = ("arch", "encoder_name", "encoder_depth", "decoder_channels", "encoder_weights", "input_blur",
                    "input_sharp")
    inference = ("threshold", "keep_largest", "fill_holes", "work_size", "refine", "refine_band", "max_fill",
                 "kind", "min_region", "detail_size", "min_shape", "scales", "tta", "smooth")
    # the scratch path's gate, once this stage's settings: a pipeline's damage policy now
    # (``pipeline.policy.DamagePolicy``, which takes them over from an older checkpoint)
    MOVED_TO_POLICY = ("min_damage", "min_sure", "min_line", "min_agree", "agree_views", "min_votes",
                       "grow_threshold")
    training = ("bce_weight", "dice_weight")

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 32, 16, 8), encoder_weights: str | None = None,
                 bce_weight: float = 1.0, dice_weight: float = 1.0, threshold: float = 0.5,
                 keep_largest: bool = _P.keep_largest, fill_holes: bool = _P.fill_holes, work_size: int | None = None,
                 refine: bool = _P.refine, refine_band: int = _P.refine_band, max_fill: int = _P.max_fill,
                 kind: str = _P.kind, min_region: int = _P.min_region, detail_size: int | None = None,
                 min_shape: float = _P.min_shape, scales=(1.0,), tta: int = 1, smooth: float = 0.0,
                 input_blur: float = 0.0, input_sharp: bool = False):
        super().__init__()
        if tta not in TTA_SIZES:
            raise ValueError(f"tta must be one of {TTA_SIZES}, got {tta!r}")
        MaskProcessor(kind=kind)  # validates the kind
        if not scales or any(not isinstance(v, (int, float)) or v <= 0 for v in scales):
            raise ValueError(f"scales must be positive numbers, got {scales!r}")
        if input_sharp and not input_blur > 0:
            raise ValueError("input_sharp needs input_blur > 0 (the sharp gray is a channel beside the blurred one)")
        self.net_in_channels = 2 if input_sharp else 1
        self._set_net(lambda: build_unet(self.net_in_channels, 1, arch, encoder_name, encoder_depth,
                                         decoder_channels, encoder_weights))
        self.multiple = 2 ** encoder_depth

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Checkpoints written before the damage policy carry its gate (``MOVED_TO_POLICY``): dropped
        here; ``Pipeline.load`` reads them into the pipeline's ``DamagePolicy``."""
        return {k: v for k, v in config.items() if k not in cls.MOVED_TO_POLICY}

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) damage logits (any H, W: padded inside)."""
        if self.config["input_blur"] > 0:
            blurred = gaussian_blur(gray.float(), self.config["input_blur"])
            gray = torch.cat([blurred, gray.to(blurred.dtype)], 1) if self.config["input_sharp"] else blurred
        x, (h, w) = pad_to_multiple(gray * 2 - 1, self.multiple)
        return self.run_net(x)[..., :h, :w]

    def loss(self, batch: dict) -> dict:
        """BCE + Dice of the logits of ``batch["gray"]`` against ``batch["mask"]``."""
        logits = self(batch["gray"])
        target = batch["mask"]
        bce = F.binary_cross_entropy_with_logits(logits.float(), target)
        if "_dice" not in self.__dict__:
            import segmentation_models_pytorch as smp
            self.__dict__["_dice"] = smp.losses.DiceLoss(mode="binary", from_logits=True)
        dice = self.__dict__["_dice"](logits.float(), target)
        loss = self.config["bce_weight"] * bce + self.config["dice_weight"] * dice
        return {"loss": loss, "bce": bce.detach(), "dice": dice.detach()}

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """Mean IoU and F1 of ``detect``'s masks."""
        pred = self.predict(batch["gray"]).cpu().numpy()
        iou, f1 = zip(*(mask_iou_f1(t[0].cpu().numpy() > 0.5, p[0]) for t, p in zip(batch["mask"], pred)))
        return {"iou": float(np.mean(iou)), "f1": float(np.mean(f1))}

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def probabilities(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) damage probability (network at ``work_size``)."""
        return grow(self._sigmoid_tta(shrink(gray, self.config["work_size"])), gray.shape[-2:])

    @torch.inference_mode()
    def detail_probabilities(self, gray: torch.Tensor) -> torch.Tensor:
        """The same at ``detail_size`` (None: full resolution), for thin scratches."""
        return grow(self._sigmoid_tta(shrink(gray, self.config["detail_size"])), gray.shape[-2:])

    def _sigmoid_tta(self, x: torch.Tensor) -> torch.Tensor:
        return tta_mean(lambda t: torch.sigmoid(self(t)).float(), (x,), int(self.config["tta"]))

    @torch.inference_mode()
    def detect(self, grays: list, damage: str | None = None, *, scratch=None,
               tile: tuple[int, int] = (1024, 128)) -> list[np.ndarray]:
        """Same-size (H,W) uint8 grays -> one (H,W) bool mask each (the grays: one batch).

        ``damage``: ``shape`` (one constant-gray shape, the competition's: the network at
        ``work_size``, snapped to the fill, one region, holes filled); ``scratches`` (old-photo
        scratches, cracks, spots, tears: the scratch path); ``auto`` (``shape`` where the
        prediction covers a constant fill of at least ``min_shape`` of the image, else the scratch
        path, told that it decides alone); None: this detector's ``kind``. ``scratch``: what the
        scratch path runs: a callable ``(gray, gated) -> mask`` (a pipeline's damage policy:
        ``gated`` True under ``auto``), or a detector or list of detectors whose ungated
        ``find_scratches`` runs (default: this one). ``tile``: (size, overlap) of the tiles a
        full-resolution pass runs in.
        """
        damage = damage or self.config["kind"]
        if damage not in KINDS:
            raise ValueError(f"damage kind must be one of {', '.join(KINDS)}, got {damage!r}")

        def scratches(g: np.ndarray, gated: bool) -> np.ndarray:
            if callable(scratch) and not isinstance(scratch, torch.nn.Module):
                return scratch(g, gated)
            first, *rest = scratch if isinstance(scratch, (list, tuple)) and scratch else [scratch or self]
            return first.find_scratches(g, tile, also=rest)

        post = self.post(damage)
        if damage == "scratches":
            return [scratches(g, False) for g in grays]
        x = gray_batch(grays, self.device)
        prob = self.probabilities(x) if self.config["work_size"] else tiled(self.probabilities, x, *tile)
        masks = []
        for p, g in zip(prob[:, 0].float().cpu().numpy(), grays):
            m = p > self.config["threshold"]
            kind = post.kind_of(m, g)
            masks.append(post(m, g, kind) if kind == "shape" else scratches(g, damage == "auto"))
        return masks

    @torch.inference_mode()
    def scratch_probabilities(self, gray: np.ndarray, tile: tuple[int, int] = (1024, 128)) -> np.ndarray:
        """(H,W) uint8 gray -> (H,W) float32 damage probability of the scratch path: the network
        at ``detail_size`` at each of ``scales`` (× the image; one is left out that would make the
        short side under 128 px or the long side over 2048), the highest kept."""
        h, w = gray.shape
        prob = None
        for s in [s for s in self.config["scales"] if s == 1 or 128 <= min(h, w) * s and max(h, w) * s <= 2048] or [1]:
            g = gray if s == 1 else cv2.resize(gray, None, fx=s, fy=s,
                                               interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            if self.config["smooth"] > 0:
                g = cv2.GaussianBlur(g, (0, 0), self.config["smooth"])
            x = gray_batch([g], self.device)
            fn = self.detail_probabilities
            p = (fn(x) if self.config["detail_size"] else tiled(fn, x, *tile))[0, 0].float().cpu().numpy()
            p = p if s == 1 else cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR)
            prob = p if prob is None else np.maximum(prob, p)
        return prob

    def view_probabilities(self, gray: np.ndarray, view: str, tile: tuple[int, int] = (1024, 128)) -> np.ndarray:
        """``scratch_probabilities`` of the (H,W) uint8 gray turned by ``view`` (a ``VIEWS`` name),
        turned back: (H,W) float32."""
        k = VIEWS[view]
        turned = dihedral(torch.from_numpy(gray), k).contiguous().numpy()
        prob = torch.from_numpy(self.scratch_probabilities(turned, tile))
        return dihedral(prob, k, inverse=True).contiguous().numpy()

    @torch.inference_mode()
    def find_scratches(self, gray: np.ndarray, tile: tuple[int, int] = (1024, 128), also: tuple = ()) -> np.ndarray:
        """(H,W) uint8 gray -> (H,W) bool old-photo damage, this detector alone (no gate):
        ``scratch_probabilities`` (joined with those of the detectors ``also``, the highest kept)
        over this one's ``threshold``, small regions dropped. A pipeline decides with its damage
        policy instead (``pipeline.policy.DamagePolicy``)."""
        prob = np.maximum.reduce([self.scratch_probabilities(gray, tile), *(o.scratch_probabilities(gray, tile)
                                                                           for o in also)])
        return self.post("scratches")(prob > self.config["threshold"], gray, "scratches")

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,1,H,W) bool: ``detect`` on its uint8 rounding."""
        g8 = (gray[:, 0].float().cpu().numpy() * 255).round().astype(np.uint8)
        return torch.from_numpy(np.stack(self.detect(list(g8)))[:, None]).to(gray.device)

    def post(self, kind: str | None = None) -> MaskProcessor:
        """The post-processing of a thresholded mask for ``kind`` (None: the ``kind`` setting),
        from this stage's inference settings."""
        c = self.config
        return MaskProcessor(c["refine"], c["refine_band"], c["max_fill"], c["keep_largest"], c["fill_holes"],
                             kind or c["kind"], c["min_region"], c["min_shape"])

    def postprocess(self, mask: np.ndarray, gray: np.ndarray | None = None) -> np.ndarray:
        """(H,W) bool (+ (H,W) uint8 gray) -> (H,W) bool: the post-processing of ``kind``."""
        return self.post()(mask, gray)

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels: input gray | true mask | predicted mask, each (B,3,H,W) in [0,1]."""
        pred = self.predict(batch["gray"]).float()
        rep = lambda t: t.float().expand(-1, 3, -1, -1)  # noqa: E731
        return [rep(batch["gray"]), rep(batch["mask"]), rep(pred)]
