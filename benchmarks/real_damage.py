"""Issue 18's numbers for a detector: does it leave undamaged photos alone, does it find old-photo
damage, and does it still find the competition's shapes?

    python benchmarks/real_damage.py [--checkpoint demo] [--damage auto|shape|scratches] [--max-images N]

On the dev photos (Kodak24 + McMaster, 512-px views, never trained on: reported, never tuned on)
and the held-out 3 % of the training photos (``--seed 19``: the split ``r18_scratch`` trained
without; the scratch detector's settings were chosen there):
- false positives: undamaged photos (and the same with film grain, sigma 3) whose restored gray
  differs from the input anywhere (target: at most 1 in 50);
- old-photo damage (``pipeline.damage.real_damage``, seeded): mean IoU of the detected mask per
  kind mix, and the share of damaged pixels found (recall);
- competition shapes (the dev benchmark's own damaged views): mean and minimum IoU;
- the inpainter on those thin masks (true mask): hole PSNR against OpenCV Telea;
- old prints (issue 29; ``pipeline.damage.old_print`` with generator seeds (29, i), never drawn in
  training; half first given fine detail of their own, ``add_fine_detail``: thin lines and text):
  undamaged prints changed, and on prints damaged with every old-print kind, worn (crack webs,
  creases, flakes as well) recall@2px (share of damaged pixels within 2 px of a detected one),
  precision@2px (share of detected pixels within 2 px of damage) and IoU; and the inpainter on
  their thin, web-like masks (true mask) against OpenCV Telea: hole PSNR and SSIM (over the
  damage's bounding box) to the undamaged print;
- the same old prints scanned (``pipeline.damage.scan``: blur, resampling, sharpening, noise, JPEG
  over the damage as well, as every real scan sees it): undamaged scans changed, and recall@2px /
  precision@2px / IoU against the damage visible in the scan (``scan_pair``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

import pipeline  # noqa: F401  (first: sets the OpenMP spin count)
from pipeline import Pipeline
from pipeline.color import pil_gray
from pipeline.damage import (OLD_PRINT_KINDS, add_fine_detail, add_grain, apply_real_damage, old_print, real_damage,
                             scan, scan_pair)
from pipeline.metrics import mask_iou_f1, psnr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAIN_ROOTS = ("bsds500", "imagenet_sample", "camvid", "imagen", "osie", "road_imagenet", "scenes")


def photo_sets(shared: Path, max_images: int | None, seed: int = 19, only: str | None = None) -> dict:
    """{name: [(rgb (H,W,3) uint8, competition-damaged gray, its mask)]}: the dev photos and the
    held-out training photos at 512 px, damaged exactly as the dev benchmark damages them."""
    from pipeline.data import PhotoData
    sets = {}
    dev = [shared / "photos" / "kodak24", shared / "photos" / "mcmaster"]
    if all(d.is_dir() for d in dev):
        sets["dev (kodak24+mcmaster)"] = PhotoData(dev, 512, 1.0, 0).val
    roots = [shared / "photos" / r for r in TRAIN_ROOTS]
    if all(r.is_dir() for r in roots):
        sets[f"held-out training photos (seed {seed})"] = PhotoData(roots, 512, 0.03, seed,
                                                                   group_pattern="^CamVid_[a-z]+_([^_]+)_").val
    sets = {k: v for k, v in sets.items() if only is None or k.startswith(only)}
    out = {}
    for name, ds in sets.items():
        n = len(ds) if not max_images else min(len(ds), max_images)
        u8 = lambda t: (t.numpy() * 255).round().astype(np.uint8)  # noqa: E731
        out[name] = [(u8(it["rgb"].permute(1, 2, 0)), u8(it["gray"][0]), it["mask"][0].numpy() > 0.5)
                     for it in (ds[i] for i in range(n))]
    return out


def evaluate(pipe, photos: list, damage: str | None) -> dict:
    """The three measurements on one set of photos."""
    res = {"n": len(photos)}
    changed = changed_grain = 0
    real_iou, real_recall, comp_iou, psnr_net, psnr_telea, prints = [], [], [], [], [], []
    for i, (rgb, comp_gray, comp_mask) in enumerate(photos):
        gray = pil_gray(rgb)
        changed += bool(pipe.detect(gray, damage).any())
        grainy = add_grain(gray, np.random.default_rng((18, i)), 3.0)
        changed_grain += bool(pipe.detect(grainy, damage).any())
        rng = np.random.default_rng((18, i, 1))
        damaged, truth = apply_real_damage(grainy, real_damage(*gray.shape, rng), rng)
        found = pipe.detect(damaged, damage)
        if truth.any():
            real_iou.append(mask_iou_f1(truth, found)[0])
            real_recall.append(float((found & truth).sum() / truth.sum()))
            filled = pipe.fill(damaged, truth)  # the inpainter on thin masks (true mask)
            telea = cv2.inpaint(damaged, truth.astype(np.uint8), 3, cv2.INPAINT_TELEA)
            psnr_net.append(psnr(grainy[truth], filled[truth]))
            psnr_telea.append(psnr(grainy[truth], telea[truth]))
        comp_iou.append(mask_iou_f1(comp_mask, pipe.detect(comp_gray, damage))[0])
        prints.append(_old_print_case(pipe, gray, damage, np.random.default_rng((29, i))))
    p = np.array([v for v in prints if v[1] is not None], float)
    res.update(print_changed=sum(v[0] for v in prints), print_recall=float(p[:, 1].mean()),
               print_precision=float(np.nanmean(p[:, 2])), print_iou=float(p[:, 3].mean()),
               print_fill=np.nanmean(p[:, 4:8], 0), scan_changed=int(sum(v[8] for v in prints)),
               scan=(np.nanmean(p[:, 9]), np.nanmean(p[:, 10]), np.nanmean(p[:, 11])))
    res.update(changed=changed, changed_grain=changed_grain, real_iou=float(np.mean(real_iou)),
               real_recall=float(np.mean(real_recall)), comp_iou=float(np.mean(comp_iou)),
               psnr=float(np.mean(psnr_net)), psnr_telea=float(np.mean(psnr_telea)),
               comp_min=float(np.min(comp_iou)))
    return res


def _old_print_case(pipe, gray: np.ndarray, damage: str | None, rng) -> tuple:
    """(undamaged print changed?, recall@2px, precision@2px (nan: nothing found), IoU, hole PSNR and
    SSIM of the inpainter, the same of Telea (true mask; SSIM over the mask's bounding box), then
    of the same print scanned: undamaged changed?, recall@2px, precision@2px, IoU) on one photo
    made an old print, then damaged with the old-print kinds (None when nothing visible was drawn)."""
    printed = old_print(add_fine_detail(gray, rng) if rng.random() < 0.5 else gray, rng)
    changed = bool(pipe.detect(printed, damage).any())
    dmg = real_damage(*gray.shape, rng, kinds=OLD_PRINT_KINDS, worn=True)
    damaged, truth = apply_real_damage(printed, dmg, rng)
    if not truth.any():
        scanned = bool(pipe.detect(scan(printed, rng), damage).any())
        return changed, None, None, None, None, None, None, None, scanned, np.nan, np.nan, np.nan
    found = pipe.detect(damaged, damage)
    fills = pipe.fill(damaged, truth), cv2.inpaint(damaged, truth.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    ys, xs = np.nonzero(truth)
    box = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    from skimage.metrics import structural_similarity
    holes = [v for f in fills for v in (psnr(printed[truth], f[truth]),
                                          structural_similarity(printed[box], f[box], data_range=255)
                                          if min(printed[box].shape) >= 7 else np.nan)]
    clean_scan, damaged_scan, truth_scan = scan_pair(printed, damaged, dmg, rng)
    return (changed, *_found(truth, found), *holes, bool(pipe.detect(clean_scan, damage).any()),
            *(_found(truth_scan, pipe.detect(damaged_scan, damage)) if truth_scan.any() else (np.nan,) * 3))


def near(m: np.ndarray) -> np.ndarray:
    """The pixels within 2 px of a (H,W) bool mask."""
    return cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def _found(truth: np.ndarray, found: np.ndarray) -> tuple[float, float, float]:
    """recall@2px, precision@2px (nan: nothing found) and IoU of a detected mask."""
    recall = float((truth & near(found)).sum() / truth.sum())
    precision = float((found & near(truth)).sum() / found.sum()) if found.any() else float("nan")
    return recall, precision, mask_iou_f1(truth, found)[0]


def set_options(pipe, items: list) -> None:
    """Apply ``[SLOT.]KEY=VALUE`` settings (as ``pipeline.assemble --set``) or exit with one line."""
    from pipeline.assemble import apply_setting
    for item in items:
        err = apply_setting(pipe, item)
        if err:
            raise SystemExit(f"error: --set {item}: {err}")


def photo_bench_args(ap, max_images: int | None = 50) -> None:
    """The options every old-print benchmark here shares: --checkpoint, --shared, --max-images,
    --only, --set."""
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--max-images", type=int, default=max_images)
    ap.add_argument("--only", help="dev or held")
    ap.add_argument("--set", action="append", default=[], metavar="SLOT.KEY=VALUE",
                    help="change an inference setting first, e.g. scratch.scales=[1,0.5] (repeatable)")


def photo_bench(args) -> tuple:
    """(pipeline with ``--set`` applied, ``photo_sets``) for ``photo_bench_args``' options; (None,
    {}) after one line when the photos are not there."""
    sets = photo_sets(Path(args.shared), args.max_images, 19, args.only)
    if not sets:
        print(f"no photos under {args.shared}/photos: nothing to measure")
        return None, {}
    pipe = Pipeline.load(args.checkpoint)
    set_options(pipe, args.set)
    return pipe, sets


# ---------------------------------------------------------------- the damage policy's measurements
def synthetic_prints(photos: list, seed: int = 49) -> list:
    """[(damaged print (H,W) uint8, its undamaged print, truth (H,W) bool)]: each photo made an old
    print and damaged with every old-print kind, worn (generator seeds (seed, i): held out, never
    drawn in training)."""
    out = []
    for i, (rgb, _, _) in enumerate(photos):
        rng = np.random.default_rng((seed, i))
        printed = old_print(pil_gray(rgb), rng)
        damaged, truth = apply_real_damage(printed, real_damage(*printed.shape, rng, kinds=OLD_PRINT_KINDS,
                                                                worn=True), rng)
        if truth.any():
            out.append((damaged, printed, truth))
    return out


def down(mask: np.ndarray, shape: tuple) -> np.ndarray:
    """A (H,W) bool mask brought to ``shape`` (area: at least half of each pixel marked)."""
    return cv2.resize(mask.astype(np.float32), shape[::-1], interpolation=cv2.INTER_AREA) >= 0.5


def resolution_sweep(pipe, prints: list, factors=(1, 2, 4, 10)) -> dict:
    """{factor: (recall@2px, precision@2px, IoU with 1x, seconds per print)}: each print scaled up
    by the factor (cubic), damage found with ``auto``, brought back to 1x and compared with the
    1x truth and the 1x mask."""
    rows, at1 = {}, []
    for f in factors:
        rec, pre, iou, secs = [], [], [], []
        for k, (damaged, _, truth) in enumerate(prints):
            big = damaged if f == 1 else cv2.resize(damaged, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
            t = time.perf_counter()
            found = pipe.detect(big)
            secs.append(time.perf_counter() - t)
            found = found if f == 1 else down(found, truth.shape)
            r, p, _ = _found(truth, found)
            rec.append(r)
            pre.append(p)
            if f == 1:
                at1.append(found)
            iou.append(mask_iou_f1(at1[k], found)[0] if at1[k].any() or found.any() else 1.0)
        rows[f] = (float(np.mean(rec)), float(np.nanmean(pre)), float(np.mean(iou)), float(np.mean(secs)))
    return rows


def clicks_of(truth: np.ndarray, min_branch: int = 40, min_spot: int = 12) -> list:
    """One click per crack as a person would give them: the truth's skeleton cut at its branch
    points, one click on each branch longer than ``min_branch`` px (at its pixel nearest its
    centroid), and one on each other piece of damage of ``min_spot`` px or more."""
    from skimage.morphology import skeletonize
    sk = skeletonize(truth)
    nb = cv2.filter2D(sk.astype(np.uint8), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - 1
    branches = sk & ~(cv2.dilate((sk & (nb >= 3)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    clicks = []
    n, lab = cv2.connectedComponents(branches.astype(np.uint8), connectivity=8)
    covered = np.zeros_like(truth)
    for k in range(1, n):
        ys, xs = np.nonzero(lab == k)
        if len(ys) > min_branch:
            j = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
            clicks.append((int(xs[j]), int(ys[j])))
            covered[ys, xs] = True
    n, lab = cv2.connectedComponents(truth.astype(np.uint8), connectivity=8)
    for k in range(1, n):
        part = lab == k
        if part.sum() >= min_spot and not (part & covered).any():
            ys, xs = np.nonzero(part)
            j = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
            clicks.append((int(xs[j]), int(ys[j])))
    return clicks


def click_selection(pipe, prints: list) -> tuple:
    """(recall@2px, precision@2px, clicks per print, share of clicks where the network saw
    nothing) of ``clicks_of`` each truth, selected with ``damage="none"``."""
    rec, pre, n = [], [], []
    for damaged, _, truth in prints:
        pts = clicks_of(truth)
        n.append(len(pts))
        found = pipe.detect(damaged, "none", points=pts) if pts else np.zeros_like(truth)
        r, p, _ = _found(truth, found)
        rec.append(r)
        pre.append(p)
    return float(np.mean(rec)), float(np.nanmean(pre)), float(np.mean(n))


def speed(pipe, photos: list, prints: list, repeats: int = 5) -> dict:
    """Median ms per restore of a 512x512 competition input, undamaged photo and old print (the
    same photos; one warm-up each), and the ratios to the competition input: one run, one machine."""
    def ms(img):
        pipe.restore(img)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            pipe.restore(img)
            ts.append(time.perf_counter() - t)
        return 1000 * float(np.median(ts))
    cases = {"competition input": [g for _, g, _ in photos[:4]], "undamaged photo": [pil_gray(r) for r, _, _ in photos[:4]],
             "old print": [d for d, _, _ in prints[:4]]}
    out = {k: float(np.mean([ms(cv2.resize(g, (512, 512), interpolation=cv2.INTER_AREA)) for g in v]))
           for k, v in cases.items()}
    return {k: (v, v / out["competition input"]) for k, v in out.items()}


def policy_report(pipe, photos: list, parts: list) -> None:
    """Print the damage policy's tables for ``parts`` (sweep, clicks, speed, harm)."""
    prints = synthetic_prints(photos)
    if "harm" in parts:
        modern = sum(bool(pipe.detect(pil_gray(r)).any()) for r, _, _ in photos)
        aged = sum(bool(pipe.detect(p).any()) for _, p, _ in prints)
        print(f"\nundamaged photos changed: modern {modern} of {len(photos)}, old prints {aged} of {len(prints)}")
    if "sweep" in parts:
        print("\n| scale | recall@2px | precision@2px | IoU with 1x (at 1x size) | s per print |\n|---|---|---|---|---|")
        for f, (r, p, i, s) in resolution_sweep(pipe, prints).items():
            print(f"| {f}x | {r:.3f} | {p:.3f} | {i:.3f} | {s:.2f} |", flush=True)
    if "clicks" in parts:
        r, p, n = click_selection(pipe, prints)
        print(f"\nclicks: recall@2px {r:.3f}, precision@2px {p:.3f}, {n:.1f} clicks per print ({len(prints)} prints)")
    if "speed" in parts:
        print("\n| 512x512 input | ms (median) | x competition input |\n|---|---|---|")
        for k, (v, ratio) in speed(pipe, photos, prints).items():
            print(f"| {k} | {v:.1f} | {ratio:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="demo")
    ap.add_argument("--damage", default=None, help="auto | shape | scratches (default: the detector's kind)")
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--grid", help="also write a figure: damaged | detected | restored | original, 5 dev photos")
    ap.add_argument("--seed", type=int, default=19, help="the held-out split of the training photos")
    ap.add_argument("--only", help="only the sets whose name starts with this (dev, held-out)")
    ap.add_argument("--set", action="append", default=[], metavar="SLOT.KEY=VALUE",
                    help="change an inference setting first, e.g. damage.threshold=0.7 (repeatable)")
    ap.add_argument("--policy", default=None, metavar="PARTS",
                    help="instead of the main table, the damage policy's: any of harm,sweep,clicks,speed "
                         "(synthetic old prints, generator seed 49)")
    args = ap.parse_args()
    pipe = Pipeline.load(args.checkpoint)
    set_options(pipe, args.set)
    if args.policy:
        for name, photos in photo_sets(Path(args.shared), args.max_images, args.seed, args.only).items():
            print(f"{name}: {len(photos)} photos; {args.checkpoint}" + (f", set {args.set}" if args.set else ""))
            policy_report(pipe, photos, args.policy.split(","))
        return
    print(f"{args.checkpoint}: detector kind {pipe.mask.config['kind']}, damage={args.damage}, "
          f"damage policy: {pipe.damage_policy}"
          + (f", set {args.set}" if args.set else ""))
    print("| set | photos | undamaged changed | with grain | old-photo damage IoU | recall | competition IoU (min) "
          "| hole PSNR on old-photo damage, true mask: inpainter / Telea | undamaged old prints changed "
          "| old prints: recall@2px / precision@2px / IoU | old prints, true mask: inpainter / Telea (hole PSNR, "
          "SSIM) | undamaged scanned prints changed | scanned old prints: recall@2px / precision@2px / IoU | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, photos in photo_sets(Path(args.shared), args.max_images, args.seed, args.only).items():
        t = time.time()
        r = evaluate(pipe, photos, args.damage)
        print(f"| {name} | {r['n']} | {r['changed']} ({100 * r['changed'] / r['n']:.1f} %) | {r['changed_grain']} "
              f"({100 * r['changed_grain'] / r['n']:.1f} %) | {r['real_iou']:.3f} | {r['real_recall']:.3f} | "
              f"{r['comp_iou']:.4f} ({r['comp_min']:.3f}) | {r['psnr']:.2f} / {r['psnr_telea']:.2f} dB "
              f"| {r['print_changed']} ({100 * r['print_changed'] / r['n']:.1f} %) "
              f"| {r['print_recall']:.3f} / {r['print_precision']:.3f} / {r['print_iou']:.3f} "
              "| {:.2f} dB, {:.3f} / {:.2f} dB, {:.3f} ".format(*r["print_fill"]) +
              f"| {r['scan_changed']} ({100 * r['scan_changed'] / r['n']:.1f} %) "
              "| {:.3f} / {:.3f} / {:.3f} ".format(*r["scan"]) + f"| {time.time() - t:.0f} |", flush=True)
        if args.grid and name.startswith("dev"):
            grid(pipe, photos, args.damage, args.grid)


def grid(pipe, photos: list, damage: str | None, path: str, picks=(3, 14, 22, 30, 37)) -> None:
    """Rows of damaged (old-photo style, with grain; the last row undamaged) | detected mask |
    restored | original, each 256 px high."""
    from PIL import Image
    rows = []
    for k, i in enumerate(picks):
        rgb = photos[i % len(photos)][0]
        gray = add_grain(pil_gray(rgb), np.random.default_rng((18, i)), 3.0)
        if k < len(picks) - 1:
            rng = np.random.default_rng((18, i, 1))
            gray, _ = apply_real_damage(gray, real_damage(*gray.shape, rng), rng)
        r = pipe.restore(gray, return_intermediates=True, damage=damage)
        cells = [Image.fromarray(gray).convert("RGB"), r.mask.convert("RGB"), r.image, Image.fromarray(rgb)]
        rows.append(np.concatenate([np.asarray(c.resize((256, 256))) for c in cells], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path, quality=88)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
