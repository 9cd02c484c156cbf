"""Training data: competition pairs, folders of photos with synthetic damage, bundled samples.

Every dataset yields the same batch dict (float tensors, values in [0, 1]):
    gray        (1,H,W)  the damaged input gray
    target_gray (1,H,W)  the true gray, PIL ``convert("L")`` of the colour target
    rgb         (3,H,W)  the colour target
    mask        (1,H,W)  1 where damaged
Hydra configs in ``conf/data`` instantiate a ``*Data`` object whose ``.train`` / ``.val`` are
datasets; augmentation (albumentations) applies one geometric transform to all targets.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .color import pil_gray
from .damage import (OLD_PRINT_KINDS, add_fine_detail, add_grain, add_touching_region, apply_damage,
                     apply_real_damage, mask_from_pair, old_print, random_damage, real_damage, scan, scan_pair)
from .io import ImageError, list_images, read_pairs_csv, to_gray, to_rgb

log = logging.getLogger(__name__)
SAMPLES_DIR = Path(__file__).parent / "assets" / "samples"


def _to_batch(damaged: np.ndarray, rgb: np.ndarray, mask: np.ndarray, target: np.ndarray | None = None) -> dict:
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32)) / 255  # noqa: E731
    return {"gray": t(damaged)[None], "target_gray": t(pil_gray(rgb) if target is None else target)[None],
            "rgb": t(rgb).permute(2, 0, 1), "mask": torch.from_numpy(np.array(mask, dtype=np.float32))[None]}


def _split(n: int, val_fraction: float, seed: int, groups=None) -> tuple[list[int], list[int]]:
    """Seeded train/val index split; with a single item (or ``val_fraction >= 1``) both use all.

    ``groups`` (n keys, optional): items sharing a key (e.g. frames of one video) land on the same
    side. Groups are taken in a seeded order and a group goes to val only while it fits in the
    val quota, so a group larger than the quota always trains.
    """
    if n == 0:
        return [], []
    if n == 1 or val_fraction >= 1:
        return list(range(n)), list(range(n))
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    if groups is None:
        perm = np.random.default_rng(seed).permutation(n).tolist()
        return sorted(perm[n_val:]), sorted(perm[:n_val])
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    val: list[int] = []
    for k in np.random.default_rng(seed).permutation(len(keys)).tolist():
        if len(val) + len(members[keys[k]]) <= n_val:
            val += members[keys[k]]
    val_set = set(val)
    return [i for i in range(n) if i not in val_set], sorted(val)


def group_keys(files, pattern: str | None) -> list[str] | None:
    """One split group per file: the first capture group of ``pattern`` searched in the file name
    (e.g. a video's sequence id), or the file itself when it does not match; None without a pattern."""
    if not pattern:
        return None
    rx = re.compile(pattern)
    keys = []
    for f in files:
        m = rx.search(Path(f).name)
        keys.append(f"group:{m.group(1) if m.groups() else m.group(0)}" if m else f"file:{f}")
    return keys


def _sample_seed() -> int:
    # Used when an item is asked for by plain index (no StreamSampler): drawn from torch's RNG,
    # seeded by the trainer (and per worker by the DataLoader).
    return int(torch.randint(0, 2 ** 31 - 1, ()).item())


def _key(i) -> tuple[int, int | None]:
    """A dataset key is an index or ``(index, sample_seed)`` (from ``StreamSampler``)."""
    return (int(i[0]), int(i[1])) if isinstance(i, (tuple, list)) else (int(i), None)


class StreamSampler(Sampler):
    """The training stream as a pure function of ``(seed, position)``: endless epochs, each a
    permutation drawn from ``(seed, epoch)``; every item carries its own sample seed (damage,
    crop, flip) drawn from ``(seed, epoch, position)``. The data a run sees therefore does not
    depend on the number of workers, and a resumed run continues the exact stream of the
    interrupted one (``start`` = items this rank already consumed).

    Yields ``(index, sample_seed)`` keys. With ``world > 1`` rank ``r`` takes every ``world``-th
    item of each permutation (the tail that does not divide evenly is dropped), as
    DistributedSampler does.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0):
        if n < 1:
            raise ValueError("StreamSampler needs a non-empty dataset")
        self.n, self.seed, self.rank, self.world, self.start = n, int(seed), rank, world, int(start)
        self.per_rank = n // world if n >= world else n  # items of each epoch this rank takes

    def __iter__(self):
        epoch, pos = divmod(self.start, self.per_rank)
        while True:
            perm = np.random.default_rng((self.seed, epoch)).permutation(self.n)
            mine = perm[self.rank::self.world][:self.per_rank] if self.n >= self.world else perm
            seeds = np.random.default_rng((self.seed, epoch, 1 + self.rank)).integers(0, 2 ** 31 - 1, len(mine))
            for k in range(pos, len(mine)):
                yield int(mine[k]), int(seeds[k])
            epoch, pos = epoch + 1, 0


def photo_transform(image_size: int, train: bool) -> "A.Compose":
    """Short side resized to 1–1.5× ``image_size`` + random crop + flip (train), or to exactly
    ``image_size`` + centre crop (val)."""
    import albumentations as A  # here, not at the top: ``restore`` reads test.csv without it (0.5 s)
    s = int(image_size)
    if train:
        sizes = sorted({s, round(s * 1.15), round(s * 1.3), round(s * 1.5)})
        return A.Compose([A.SmallestMaxSize(max_size=sizes, interpolation=cv2.INTER_AREA),
                          A.RandomCrop(s, s), A.HorizontalFlip()])
    return A.Compose([A.SmallestMaxSize(max_size=s, interpolation=cv2.INTER_AREA), A.CenterCrop(s, s)])


class PhotoPairs(Dataset):
    """Colour photos -> training pairs with competition-style damage drawn on the fly.

    Training items get a random scale/crop/flip and new damage each time; validation items a
    centre crop and damage fixed by ``(seed, index)``.
    """

    def __init__(self, files, image_size: int = 256, train: bool = True, seed: int = 0,
                 damage: dict | None = None):
        self.files = [Path(f) for f in files]
        self.image_size = int(image_size)
        self.train = train
        self.seed = seed
        opts = dict(damage or {})
        # hard cases for the detector (see conf/data/photos.yaml); the rest go to random_damage
        self.texture_prob, self.touch_prob = opts.pop("texture_prob", 0.0), opts.pop("touch_prob", 0.0)
        self.texture_amp = int(opts.pop("texture_amp", 8))
        # old-photo damage and undamaged negatives (see conf/data/photos.yaml); the rest: shapes
        self.real_prob, self.clean_prob = float(opts.pop("real_prob", 0.0)), float(opts.pop("clean_prob", 0.0))
        self.grain_prob, self.grain_max = float(opts.pop("grain_prob", 0.0)), float(opts.pop("grain_max", 6.0))
        self.print_prob = float(opts.pop("print_prob", 0.0))
        self.detail_prob = float(opts.pop("detail_prob", 0.0))
        self.detail_contrast = float(opts.pop("detail_contrast", 90.0))
        self.detail_edges = float(opts.pop("detail_edges", 0.0))
        self.relief_prob, self.thick_prob = float(opts.pop("relief_prob", 0.0)), float(opts.pop("thick_prob", 0.0))
        self.faint_prob = float(opts.pop("faint_prob", 0.0))
        self.print_kinds = tuple(opts.pop("print_kinds", OLD_PRINT_KINDS))
        self.scan_prob = float(opts.pop("scan_prob", 0.0))
        self.scan_noise = float(opts.pop("scan_noise", 4.0))
        self.turn_prob = float(opts.pop("turn_prob", 0.0))
        self.damage = opts
        self.aug = photo_transform(self.image_size, train)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key) -> dict:
        """``key``: an index, or ``(index, sample_seed)`` to fix a training item's randomness."""
        i, seed = _key(key)
        if not self.train:
            seed = (self.seed, i)
        rng = np.random.default_rng(_sample_seed() if seed is None else seed)
        try:
            rgb = to_rgb(self.files[i])
        except ImageError as e:
            log.warning("skipping %s", e)
            return self[((i + 1) % len(self), int(rng.integers(2 ** 31 - 1)))]
        self.aug.set_random_seed(int(rng.integers(2 ** 31 - 1)))
        rgb = self.aug(image=rgb)["image"]
        if self.real_prob or self.clean_prob:  # (drawn only then: older configs keep their stream)
            u = rng.random()
            if u < self.real_prob + self.clean_prob:
                return self._old_photo(rgb, rng, clean=u < self.clean_prob)
        dmg = random_damage(self.image_size, self.image_size, rng, **self.damage)
        if rng.random() < self.touch_prob:
            rgb = add_touching_region(rgb, dmg, rng)
        gray = pil_gray(rgb)
        damaged = apply_damage(gray, dmg, rng, self.texture_amp if rng.random() < self.texture_prob else 0)
        # the competition's definition, as for real pairs: input != gray, holes filled
        return _to_batch(damaged, rgb, mask_from_pair(damaged, gray))


    def _old_photo(self, rgb: np.ndarray, rng: np.random.Generator, clean: bool, turned: bool = False) -> dict:
        """An old-photo sample: the gray, as an old print (``old_print``: ``print_prob``) or with
        film grain (``grain_prob``), and either no damage (a negative: empty mask) or scratches,
        cracks, spots, tears (``real_damage``; on a print ``print_kinds``, by default also crack webs,
        creases and flakes); ``scan_prob``: then scanned (``scan``: blur, resampling, sharpening,
        noise, JPEG over the damage too); ``turn_prob``: the whole sample then turned by 90, 180 or
        270 degrees (upright photos make thin vertical lines picture content: poles, trunks, edges;
        a network that learns so misses a print's vertical scratches)."""
        turn = 0 if turned or not self.turn_prob > 0 or rng.random() >= self.turn_prob else int(rng.integers(1, 4))
        if turn:  # (drawn only with turn_prob: older streams kept)
            return {k: torch.rot90(v, turn, (-2, -1)).contiguous()
                    for k, v in self._old_photo(rgb, rng, clean, turned=True).items()}
        gray = pil_gray(rgb)
        printed = self.print_prob > 0 and rng.random() < self.print_prob  # (drawn only then: older streams kept)
        if self.detail_prob > 0 and rng.random() < self.detail_prob:  # fine detail of the photo's own
            gray = add_fine_detail(gray, rng, self.detail_contrast, self.detail_edges)
        if printed:
            gray = old_print(gray, rng)
        elif rng.random() < self.grain_prob:
            gray = add_grain(gray, rng, rng.uniform(1, self.grain_max))
        scanned = self.scan_prob > 0 and rng.random() < self.scan_prob  # (drawn only then: older streams kept)
        if clean:
            gray = scan(gray, rng, self.scan_noise) if scanned else gray
            return _to_batch(gray, rgb, np.zeros(gray.shape, bool), target=gray)
        damage = real_damage(*gray.shape, rng, relief=self.relief_prob, thick=self.thick_prob,
                             faint=self.faint_prob, **({"kinds": self.print_kinds, "worn": True} if printed else {}))
        damaged, mask = apply_real_damage(gray, damage, rng)
        if scanned:  # the damage seen through the scan, as on every real scan
            gray, damaged, mask = scan_pair(gray, damaged, damage, rng, noise_max=self.scan_noise)
        return _to_batch(damaged, rgb, mask, target=gray)


class DaconPairs(Dataset):
    """Competition pairs listed in a csv (``ID,input_image_path,gt_image_path``).

    The mask is ``input != PIL-L(gt)`` with holes filled. Augmentation is crop + flip only (no
    resampling, so the constant fill stays exactly constant), identical for input, target, mask.
    """

    def __init__(self, root, rows, image_size: int = 512, train: bool = True):
        import albumentations as A
        self.root = Path(root)
        self.rows = list(rows)
        self.image_size = int(image_size)
        self.train = train
        s = self.image_size
        targets = {"damaged": "mask", "dmask": "mask"}
        geo = [A.PadIfNeeded(s, s, border_mode=cv2.BORDER_REFLECT_101)]
        geo += [A.RandomCrop(s, s), A.HorizontalFlip()] if train else [A.CenterCrop(s, s)]
        self.aug = A.Compose(geo, additional_targets=targets)
        self._bad: set[int] = set()
        self.skip_bad = True  # evaluation turns this off to report every bad pair instead

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        """``key``: an index, or ``(index, sample_seed)`` to fix a training item's crop and flip."""
        i, seed = _key(key)
        if not self.skip_bad:
            return self.load(i, seed)
        for k in range(len(self)):  # training skips a bad pair (reported once) instead of dying
            try:
                return self.load((i + k) % len(self), seed)
            except ImageError as e:
                if (i + k) % len(self) not in self._bad:
                    self._bad.add((i + k) % len(self))
                    log.warning("skipping %s", e)
        raise ImageError(f"{self.root}: no readable pair in {len(self)} rows")

    def load(self, i: int, seed: int | None = None) -> dict:
        """Pair ``i``; raises ``ImageError`` (one line naming the file) if it cannot be used."""
        inp_path, gt_path = self.rows[i]
        if gt_path is None:
            raise ImageError(f"{inp_path}: the csv names no gt_image_path for it")
        rgb = to_rgb(gt_path)
        damaged = to_gray(inp_path)
        if damaged.shape != rgb.shape[:2]:
            raise ImageError(f"{inp_path}: input is {damaged.shape[1]}x{damaged.shape[0]} but "
                             f"{gt_path} is {rgb.shape[1]}x{rgb.shape[0]}")
        mask = mask_from_pair(damaged, pil_gray(rgb)).astype(np.uint8)
        if self.train:
            self.aug.set_random_seed(_sample_seed() if seed is None else seed)
        out = self.aug(image=rgb, damaged=damaged, dmask=mask)
        return _to_batch(out["damaged"], out["image"], out["dmask"].astype(bool))


# ----------------------------------------------------------------------- Hydra data modules
class PhotoData:
    """``data=photos``: every jpg/png/tif/bmp under ``root`` (a folder or a list of folders,
    recursive), with synthetic damage. ``group_pattern``: a regex whose first group names the
    split group of a file (near-duplicate video frames stay on one side of the split)."""

    def __init__(self, root, image_size: int = 256, val_fraction: float = 0.05, seed: int = 0,
                 max_files: int | None = None, damage: dict | None = None,
                 group_pattern: str | None = None):
        roots = [root] if isinstance(root, (str, os.PathLike)) or root is None else list(root)
        files = []
        for r in roots:
            if r is None or not Path(os.path.expanduser(str(r))).exists():
                raise FileNotFoundError(f"data.root={r}: no such folder")
            files += list_images(os.path.expanduser(str(r)))
        if not files:
            raise FileNotFoundError(f"data.root={root}: no images (jpg/png/tif/bmp) found")
        if max_files:
            files = files[: int(max_files)]
        tr, va = _split(len(files), val_fraction, seed, group_keys(files, group_pattern))
        self.train = PhotoPairs([files[i] for i in tr], image_size, True, seed, damage)
        self.val = PhotoPairs([files[i] for i in va], image_size, False, seed, damage)


class SampleData(PhotoData):
    """``data=samples`` (default): the Kodak photos bundled with the package, downscaled."""

    def __init__(self, image_size: int = 256, val_fraction: float = 0.25, seed: int = 0,
                 damage: dict | None = None, root=None):
        super().__init__(root or SAMPLES_DIR, image_size, val_fraction, seed, damage=damage)


class DaconData:
    """``data=dacon``: the competition layout under ``root`` (train.csv, train_input/, train_gt/)."""

    def __init__(self, root, image_size: int = 512, val_fraction: float = 0.02, seed: int = 0,
                 csv_name: str = "train.csv"):
        root = Path(os.path.expanduser(str(root)))
        rows = read_pairs_csv(root / csv_name)
        tr, va = _split(len(rows), val_fraction, seed)
        self.train = DaconPairs(root, [rows[i] for i in tr], image_size, True)
        self.val = DaconPairs(root, [rows[i] for i in va], image_size, False)
