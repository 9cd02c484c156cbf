"""Colorizer: gray -> colour in CIE Lab. The gray stays the structure; the network adds a, b.

Two heads (``mode``):
- ``classification`` (default): logits over the in-gamut cells of a quantized ab grid
  (Zhang et al. 2016), class-rebalanced cross-entropy with the ab prior estimated from the
  training data (``prepare``), decoded by the annealed mean (``temperature``); optionally plus
  the metric's hue term as a loss (``hue_weight``: 1 - correlation of soft hue histograms of the
  decoded colour and the truth, see ``hue_correlation_loss``).
- ``regression``: ab directly, smooth-L1 (tends to flat, brownish colour; kept for comparison).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .base import Stage, register_stage
from .color import AB_RANGE, ab_grid, fp32, gray8_ab_to_rgb8, gray_ab_to_rgb, rgb_to_lab
from .colour_adjust import _ring_inside, _scale_inside, _with_hints, _with_reference
from .hue_loss import binned_hue_histogram, hue_correlation_loss, soft_hue_histogram  # noqa: F401  (re-exported)
from .metrics import hue_correlation
from .nets import TTA_SIZES, _pooled_head, build_unet, gray_batch, grow, pad_to_multiple, tiled, to_uint8, tta_mean


@register_stage("colorize")
class Colorizer(Stage):
    """Gray (B,1,H,W) in [0,1] -> ab logits (B,Q,H,W) or ab (B,2,H,W) (``mode``).

    ``colorize`` is the whole inference, what every caller runs: uint8 grays in, uint8 RGB out
    whose PIL gray equals the input (``stages.color.gray8_ab_to_rgb8``). Inference settings:
    ``work_size`` (colour is predicted at most at this size, then upsampled), ``tta`` (1/2/4/8:
    average the logits over that many flips/transposes), ``temperature`` (annealed-mean decoding),
    ``prior_shift`` (decoding: logits - shift * log(ab prior); > 0 brings back the rarer hues),
    ``saturation`` (scales the predicted ab), ``hole_saturation`` (scales it again on the
    inpainted pixels: the network is less sure of a smooth fill than of the photo around it) and
    ``hole_ring`` (0-1: how much of the inpainted pixels' colour comes from the ring around the
    hole, carried in by Telea inpainting of a and b, instead of the prediction); for colour hints
    (``colorize(hints=...)``): ``hint_spread`` and ``hint_tone`` (how far and over which grays a
    point's correction spreads) and ``hint_saturation`` (``saturation`` for the images with hints;
    None: the same). Hints enter the network through extra input channels (``hints``) or a second
    network that corrects a frozen base's logits (``hint_branch``, an encoder name; without hints
    the base alone runs).
    """

    architecture = ("arch", "encoder_name", "encoder_depth", "decoder_channels", "encoder_weights", "mode",
                    "bin_size", "head_stride", "hints", "hint_branch")
    inference = ("temperature", "work_size", "saturation", "tta", "prior_shift", "hole_saturation", "hole_ring",
                 "hint_spread", "hint_tone", "hint_saturation")
    training = ("rebalance", "l1_weight", "hue_weight", "hue_target", "hole_weight", "hint_none", "hint_dense",
                "hint_points")

    def __init__(self, arch: str = "Unet", encoder_name: str = "resnet18", encoder_depth: int = 5,
                 decoder_channels=(128, 64, 64, 64, 64), encoder_weights: str | None = None,
                 mode: str = "classification", bin_size: float = 10.0, temperature: float = 0.38,
                 rebalance: float = 0.5, l1_weight: float = 0.0, work_size: int | None = 256,
                 saturation: float = 1.0, head_stride: int = 4, tta: int = 1,
                 hue_weight: float = 0.0, prior_shift: float = 0.0, hue_target: str = "head",
                 hole_weight: float = 1.0, hole_saturation: float = 1.0, hole_ring: float = 0.0,
                 hints: bool = False, hint_none: float = 0.25, hint_dense: float = 0.15, hint_points: float = 8.0,
                 hint_spread: float = 0.15, hint_tone: float = 25.0, hint_branch: str | None = None,
                 hint_saturation: float | None = None):
        self.check_setting("hole_saturation", hole_saturation)
        if hints and hint_branch:
            raise ValueError("hints (hint channels in the network) and hint_branch (a second network for "
                             "hints) exclude each other: choose one")
        if mode not in ("classification", "regression"):
            raise ValueError(f"mode must be 'classification' or 'regression', got {mode!r}")
        if hue_target not in ("head", "full"):
            raise ValueError(f"hue_target must be 'head' or 'full', got {hue_target!r}")
        if tta not in TTA_SIZES:
            raise ValueError(f"tta must be one of {TTA_SIZES}, got {tta!r}")
        super().__init__()
        centers, lut, g = ab_grid(bin_size)
        self.grid_side = g
        self.register_buffer("centers", centers)
        self.register_buffer("lut", lut)
        self.register_buffer("prior", torch.full((len(centers),), 1.0 / len(centers)))
        out = len(centers) if mode == "classification" else 2
        self.net_in_channels = 4 if hints else 1  # + a/110, b/110 and the mask of the colour hints

        def build():
            net = build_unet(self.net_in_channels, out, arch, encoder_name, encoder_depth, decoder_channels,
                             encoder_weights)
            if hints:  # zero weights on the hint channels: without hints the network is what it was
                first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
                torch.nn.init.zeros_(first.weight.data[:, 1:])
            return _pooled_head(net, out, head_stride)
        self._set_net(build)
        if hint_branch:
            def build_branch():
                # gray, the hints (a, b, mask) and the base's ab in; a correction of its logits out
                net = build_unet(6, out, arch, hint_branch, encoder_depth, decoder_channels, encoder_weights)
                return _pooled_head(net, out, head_stride, zero=True)  # starts as no correction
            self._set_net(build_branch, "hint_net")
        self.multiple = 2 ** encoder_depth * head_stride // math.gcd(2 ** encoder_depth, head_stride)

    @classmethod
    def check_setting(cls, key: str, value) -> None:
        if key == "hole_saturation" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or not value >= 0):
            raise ValueError(f"hole_saturation must be a number >= 0, got {value!r}")

    @classmethod
    def upgrade_config(cls, config: dict) -> dict:
        """Checkpoints written before ``tta`` existed say ``flip_tta``: true means ``tta`` 2."""
        config = dict(config)
        if config.pop("flip_tta", None) and config.get("tta", 1) == 1:
            config["tta"] = 2
        return config

    @property
    def takes_hints(self) -> bool:
        """True when the network takes colour hints in (hint channels or a hint branch)."""
        return bool(self.config["hints"] or self.config["hint_branch"])

    def train(self, mode: bool = True) -> "Colorizer":
        """A colorizer with a ``hint_branch`` trains only the branch: the base network stays in
        eval mode (its norm statistics fixed), so without hints it computes what it did."""
        super().train(mode)
        if self.config.get("hint_branch") and "net" in self._modules:
            self._modules["net"].train(False)
        return self

    @property
    def num_classes(self) -> int:
        """Q, the number of in-gamut ab cells."""
        return len(self.centers)

    def forward(self, gray: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        """(B,1,H,W) (+ (B,3,H,W) hints: a/110, b/110, mask; None: no hints) -> (B,Q or 2,
        ceil(H/s),ceil(W/s)) with s = ``head_stride``. A colorizer that takes no hints ignores them.
        With a ``hint_branch``, the base network (never trained further) gives the logits and the
        branch adds its correction to those of the images with hints: without hints, the base's."""
        s = self.config["head_stride"]
        x = gray * 2 - 1
        if self.config["hints"]:
            x = torch.cat([x, hints.to(x.dtype) if hints is not None else x.new_zeros(x.shape[0], 3, *x.shape[2:])], 1)
        x, (h, w) = pad_to_multiple(x, self.multiple)
        if not self.config["hint_branch"]:
            return self.run_net(x)[..., :-(-h // s), :-(-w // s)]
        with torch.no_grad():
            out = self.run_net(x)
        if hints is not None:
            hints, _ = pad_to_multiple(hints.to(x.dtype), self.multiple)
            has = _has_hints(hints)
            if self.training or bool(has.any()):  # (training: a graph even when no image has hints)
                base_ab = F.interpolate(self.decode(out) / AB_RANGE, size=x.shape[-2:], mode="bilinear",
                                        align_corners=False)
                fix = self.hint_net(torch.cat([x, hints, base_ab.to(x.dtype)], 1))
                out = out + fix * has.view(-1, 1, 1, 1).to(fix.dtype)
        return out[..., :-(-h // s), :-(-w // s)]

    def _to_head(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) area-averaged to the output grid of ``like`` (the head's stride)."""
        s = self.config["head_stride"]
        if s > 1:
            x, _ = pad_to_multiple(x, s)
            x = F.avg_pool2d(x, s)[..., :like.shape[-2], :like.shape[-1]]
        return x

    def _target_ab(self, rgb: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """True ab (B,2,H,W) of ``rgb``, area-averaged to the output grid of ``like``."""
        return self._to_head(rgb_to_lab(rgb)[:, 1:], like)

    # ----------------------------------------------------------------- ab <-> classes
    def classes_of(self, ab: torch.Tensor) -> torch.Tensor:
        """(B,2,H,W) ab -> (B,H,W) class index of the nearest in-gamut cell."""
        g = self.grid_side
        idx = ((ab + AB_RANGE) / self.config["bin_size"]).round().long().clamp(0, g - 1)
        return self.lut[idx[:, 0] * g + idx[:, 1]]

    def class_weights(self) -> torch.Tensor:
        """(Q,) rebalancing weights: 1 / ((1-λ)·prior + λ/Q), with mean 1 under the prior."""
        lam = self.config["rebalance"]
        w = 1.0 / ((1 - lam) * self.prior + lam / self.num_classes)
        return w / (w * self.prior).sum()  # expected weight under the prior is 1

    @fp32
    def decode(self, out: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """Network output -> ab (B,2,H,W). Classification: annealed mean of the softmax of the
        logits minus ``prior_shift`` · log(ab prior)."""
        if self.config["mode"] == "regression":
            return out.float() * AB_RANGE
        t = self.config["temperature"] if temperature is None else temperature
        # The network over-predicts the common hues (browns, oranges): a small tilt of the logits
        # away from the training prior brings back greens, blues and purples.
        tilt = -self.config["prior_shift"] / t * torch.log(self.prior.float().clamp(min=1e-6))
        logits = torch.add(tilt.view(1, -1, 1, 1), out.float(), alpha=1 / t)
        # Classes more than e^80 less likely than the best weigh nothing, but their subnormal
        # probabilities would make the sums ~3x slower on a CPU.
        e = (logits - logits.amax(1, keepdim=True).detach()).clamp(min=-80).exp()
        b, q, h, w = e.shape
        # one product gives the softmax's numerators (sum of p*a, p*b) and its denominator (sum of p)
        sums = torch.matmul(torch.cat([self.centers, self.centers.new_ones(q, 1)], 1).T, e.reshape(b, q, h * w))
        return (sums[:, :2] / sums[:, 2:]).view(b, 2, h, w)

    # ----------------------------------------------------------------- training
    def prepare(self, loader, max_batches: int = 50) -> None:
        """Estimate the ab prior (class frequencies) from up to ``max_batches`` training batches
        (not for a ``hint_branch``: the prior belongs to the base network, which it decodes)."""
        if self.config["mode"] != "classification" or max_batches <= 0 or self.config["hint_branch"]:
            return
        counts = torch.zeros_like(self.prior, dtype=torch.float64)
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            ab = rgb_to_lab(batch["rgb"].to(self.prior.device))[:, 1:]
            s = self.config["head_stride"]
            ab = F.avg_pool2d(ab, s) if s > 1 and min(ab.shape[-2:]) >= s else ab
            counts += torch.bincount(self.classes_of(ab).flatten(), minlength=self.num_classes).double()
        if counts.sum() > 0:
            p = counts / counts.sum()
            p = (p + 1e-4) / (p + 1e-4).sum()   # cells never seen keep a small mass
            self.prior.copy_(p.float())

    def loss(self, batch: dict) -> dict:
        """Rebalanced cross-entropy over ab classes (+ ``l1_weight`` * L1 of the decoded ab +
        ``hue_weight`` * hue-histogram loss of the prediction at the head's resolution against the
        truth's histogram at the head's resolution (``hue_target`` head) or at full resolution
        (``full``, as the metric sees it)), or smooth-L1 on ab in regression mode. Each head cell's
        cross-entropy is weighted 1 + (``hole_weight`` - 1) * its share of damaged pixels (with
        ``upstream``, the inpainted fill the colorizer sees there)."""
        gray, rgb = batch.get("restored_gray", batch["target_gray"]), batch["rgb"]
        out = self(gray, self.sample_hints(rgb) if self.takes_hints else None).float()
        ab = self._target_ab(rgb, out)
        terms = {}
        if self.config["mode"] == "classification":
            cls = self.classes_of(ab)
            ce = F.cross_entropy(out, cls, reduction="none") * self.class_weights()[cls]
            if self.config["hole_weight"] != 1.0 and "mask" in batch:
                # the filled hole is smooth gray the network must not read as sky or foliage
                hole = self._to_head(batch["mask"].float(), out)[:, 0]
                ce = ce * (1 + (self.config["hole_weight"] - 1) * hole)
            terms["ce"] = ce.mean()
            loss = terms["ce"]
            if self.config["l1_weight"] > 0:
                terms["l1_ab"] = F.smooth_l1_loss(self.decode(out, 1.0) / AB_RANGE, ab / AB_RANGE)
                loss = loss + self.config["l1_weight"] * terms["l1_ab"]
            if self.config["hue_weight"] > 0:
                small = self._to_head(gray.float(), out)
                pred_rgb = gray_ab_to_rgb(small, self.decode(out) * self.config["saturation"])
                # the metric counts every full-resolution pixel's hue; the head-grid average of the
                # truth is smoother than that (fewer rare hues)
                true_rgb = rgb if self.config["hue_target"] == "full" else gray_ab_to_rgb(small, ab)
                terms["hue"] = hue_correlation_loss(pred_rgb, true_rgb)
                loss = loss + self.config["hue_weight"] * terms["hue"]
        else:
            terms["l1_ab"] = F.smooth_l1_loss(out, ab / AB_RANGE)
            loss = terms["l1_ab"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    @torch.no_grad()
    def sample_hints(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) RGB in [0,1] -> (B,3,H,W) hints drawn from its true colour, as in user-guided
        colorization (Zhang et al. 2017): per image, none (``hint_none`` of the time), one dense
        rectangle of 20-70 % of each side (``hint_dense``: the aligned part of a reference), else a
        geometric number of points (mean ``hint_points``), each a 1-5 px square of its mean ab."""
        ab = rgb_to_lab(rgb.float())[:, 1:] / AB_RANGE
        b, _, h, w = ab.shape
        hints = ab.new_zeros(b, 3, h, w)
        c = self.config
        for i, u in enumerate(torch.rand(b).tolist()):
            if u < c["hint_none"]:
                continue
            dense = u < c["hint_none"] + c["hint_dense"]
            if dense:
                bh, bw = (int(n * (0.2 + 0.5 * torch.rand(()).item())) for n in (h, w))
                boxes = [(torch.randint(0, h - bh + 1, ()).item(), torch.randint(0, w - bw + 1, ()).item(), bh, bw)]
            else:
                n = 1 + int(math.log(1 - torch.rand(()).item()) / math.log(1 - 1 / max(c["hint_points"], 1.01)))
                sizes = torch.randint(1, 6, (min(n, 64),)).tolist()
                boxes = [(torch.randint(0, h - k + 1, ()).item(), torch.randint(0, w - k + 1, ()).item(), k, k)
                         for k in sizes]
            for y, x, bh, bw in boxes:
                patch = ab[i, :, y:y + bh, x:x + bw]
                hints[i, :2, y:y + bh, x:x + bw] = patch if dense else patch.mean((1, 2), keepdim=True)
                hints[i, 2, y:y + bh, x:x + bw] = 1
        return hints

    @torch.no_grad()
    def metrics(self, batch: dict) -> dict:
        """ab L1, the hue term C of the metric (of ``colorize``'s images), and predicted/true chroma ratio."""
        gray, rgb = batch.get("restored_gray", batch["target_gray"]), batch["rgb"]
        ab_true = rgb_to_lab(rgb)[:, 1:]
        ab = self.predict_ab(gray)
        imgs = self.colorize(list(to_uint8(gray)))
        gt = (rgb.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        c = [hue_correlation(g, p) for g, p in zip(gt, imgs)]
        chroma = ab.norm(dim=1).mean() / ab_true.norm(dim=1).mean().clamp(min=1e-6)
        out = {"l1_ab": float((ab - ab_true).abs().mean()), "C": float(np.mean(c)), "chroma_ratio": float(chroma)}
        if self.takes_hints:  # C with hints drawn as in training (seeded: the same ones at every validation)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                hints = self.sample_hints(rgb)
            hinted = gray_ab_to_rgb(gray.float(), self.predict_ab(gray, hints=hints)).clamp(0, 1)
            hinted = (hinted.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
            out["C_hints"] = float(np.mean([hue_correlation(g, p) for g, p in zip(gt, hinted)]))
        return out

    # ----------------------------------------------------------------- inference
    @torch.inference_mode()
    def predict_ab(self, gray: torch.Tensor, saturation: float | None = None,
                   hints: torch.Tensor | None = None, temperature: float | None = None) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] (+ (B,3,H,W) hints as ``forward`` takes them, or None) ->
        (B,2,H,W) ab, computed at most at ``work_size`` (ab is smooth; the full-resolution gray
        carries the detail) and upsampled; ``tta`` (1/2/4/8) averages the logits over that many
        flips/transposes; ``saturation`` (None: the setting; ``hint_saturation``, when set, for the
        images with hints) scales the result; ``temperature``: this call's decoding (None: the setting)."""
        h, w = gray.shape[-2:]
        ws = self.config["work_size"]
        x = gray
        if ws and max(h, w) > ws:
            s = ws / max(h, w)
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(gray, size=size, mode="bilinear", align_corners=False, antialias=True)
            if hints is not None:  # a hinted cell keeps its hints' mean colour, however small their share
                m = F.interpolate(hints[:, 2:], size=size, mode="area")
                ab = F.interpolate(hints[:, :2] * hints[:, 2:], size=size, mode="area") / m.clamp(min=1e-6)
                hints = torch.cat([ab, (m > 0).to(ab.dtype)], 1)
        inputs = (x,) if hints is None or not self.takes_hints else (x, hints.to(x.device, x.dtype))
        out = tta_mean(self, inputs, int(self.config["tta"]))
        sat = self.config["saturation"] if saturation is None else saturation
        if saturation is None and self.config["hint_saturation"] is not None and hints is not None:
            has = _has_hints(hints).view(-1, 1, 1, 1)
            sat = torch.where(has, float(self.config["hint_saturation"]), float(sat)).float()
        ab = self.decode(out, temperature) * sat
        return grow(ab, (h, w))

    @torch.inference_mode()
    def colorize(self, grays: list, holes: list | None = None, *, saturation: float | None = None,
                 hole_saturation: float | None = None, tile: tuple[int, int] = (1024, 128),
                 references: list | None = None, hints: list | None = None, temperature: float | None = None,
                 hole_ring: float | None = None, hint_edges: bool = False) -> list[np.ndarray]:
        """Same-size (H,W) uint8 grays (one batch) -> (H,W,3) uint8 RGB each, whose PIL gray
        equals the gray (±1). ``holes``: (H,W) bool masks of the inpainted pixels (or None),
        whose colour ``hole_saturation`` scales. ``saturation`` / ``hole_saturation``: this
        call's values (None: the settings). ``tile``: (size, overlap) of the tiles a full-size
        pass runs in (``work_size`` None). ``references``: a ``Reference`` (or None) per gray:
        where it covers the image its colour replaces the predicted one (feathered at its edge).
        ``hints``: a ``stages.Hints`` (or None) per gray, known colours at points: a colorizer with
        hint channels (``hints`` True) takes them in; any colorizer then spreads each point's
        correction to the pixels near it of similar gray (``hint_spread``, ``hint_tone``); ``hint_edges``:
        near by the geodesic distance that strong edges lengthen, so a point's colour stays on its
        object. ``temperature`` / ``hole_ring``: this call's values (None: the settings)."""
        x = gray_batch(grays, self.device)
        hints = hints if hints is not None else [None] * len(grays)
        if (self.takes_hints or self.config["hint_saturation"] is not None) and any(hn is not None for hn in hints):
            x = torch.cat([x, torch.stack([hn.render(*x.shape[-2:]) if hn is not None else
                                           x.new_zeros(3, *x.shape[-2:]) for hn in hints]).to(x.device)], 1)
        fn = lambda t: self.predict_ab(t[:, :1], saturation, t[:, 1:] if t.shape[1] > 1 else None,  # noqa: E731
                                       temperature)
        ab = fn(x) if self.config["work_size"] else tiled(fn, x, *tile)
        hs = self.config["hole_saturation"] if hole_saturation is None else hole_saturation
        self.check_setting("hole_saturation", hs)
        ring = self.config["hole_ring"] if hole_ring is None else hole_ring
        out = []
        refs = references if references is not None else [None] * len(grays)
        for g, a, m, r, hn in zip(grays, ab, holes if holes is not None else [None] * len(grays), refs, hints):
            if m is not None and hs != 1.0:
                a = _scale_inside(a, np.asarray(m, bool), hs)
            if m is not None and ring > 0 and np.asarray(m).any():
                a = _ring_inside(a, np.asarray(m, bool), ring)
            a = a if r is None else _with_reference(a, r, g)
            rgb = gray8_ab_to_rgb8(g, a if hn is None else _with_hints(a, hn, g, self.config["hint_spread"],
                                                                     self.config["hint_tone"], edges=hint_edges))
            if r is not None and r.exact:
                rgb[r.valid] = r.rgb[r.valid]
            out.append(rgb)
        return out

    @torch.inference_mode()
    def predict(self, gray: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) gray in [0,1] -> (B,3,H,W) RGB in [0,1]: ``colorize`` of its uint8 rounding."""
        imgs = np.stack(self.colorize(list(to_uint8(gray))))
        return torch.from_numpy(imgs).permute(0, 3, 1, 2).to(gray.device, torch.float32) / 255

    @torch.no_grad()
    def visualize(self, batch: dict) -> list:
        """Panels: gray | true colour | predicted colour, each (B,3,H,W) in [0,1]."""
        gray = batch.get("restored_gray", batch["target_gray"])
        return [gray.float().expand(-1, 3, -1, -1), batch["rgb"].float(), self.predict(gray)]


def _has_hints(hints: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) hints (a, b, mask) -> (B,) bool: the image has at least one hinted pixel."""
    return hints[:, 2].flatten(1).amax(1) > 0


