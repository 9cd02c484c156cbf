import cv2
import numpy as np
import pytest

from pipeline.damage import SHAPES, apply_damage, mask_from_pair, random_damage, rule_mask


def test_damage_statistics_over_many_seeds():
    fracs, fills, kinds = [], [], set()
    for seed in range(300):
        d = random_damage(128, 128, np.random.default_rng(seed))
        fracs.append(d.mask.mean())
        fills.append(d.fill)
        kinds.add(d.shape)
    fracs = np.array(fracs)
    assert fracs.min() >= 0.009 and fracs.max() <= 0.16
    assert fracs.max() - fracs.min() > 0.1  # the whole range is used
    assert min(fills) >= 0 and max(fills) <= 100 and len(set(fills)) > 50
    assert kinds == set(SHAPES)


def test_damage_is_seeded():
    a = random_damage(96, 80, np.random.default_rng(7))
    b = random_damage(96, 80, np.random.default_rng(7))
    assert np.array_equal(a.mask, b.mask) and a.fill == b.fill and a.mask.shape == (96, 80)


def test_one_connected_shape_per_image():
    from scipy import ndimage
    for seed in range(40):
        d = random_damage(128, 128, np.random.default_rng(seed), shapes=("rectangle", "ellipse", "triangle"))
        assert ndimage.label(d.mask, structure=np.ones((3, 3)))[1] == 1


def test_mask_from_pair_fills_holes():
    gray = np.full((32, 32), 200, np.uint8)
    gray[10:20, 10:20] = 40          # true pixels inside the shape equal to the fill value
    gray[14, 14] = 40
    damaged = gray.copy()
    damaged[8:24, 8:24] = 40
    naive = damaged != gray
    assert not naive[14, 14] and not naive[12, 12]
    m = mask_from_pair(damaged, gray)
    assert m[8:24, 8:24].all() and m.sum() == 16 * 16


def test_rule_mask_finds_a_constant_fill(rng):
    gray = rng.integers(120, 256, (64, 64), dtype=np.uint8)
    d = random_damage(64, 64, np.random.default_rng(3))
    out = rule_mask(apply_damage(gray, d))
    assert (out == d.mask).mean() > 0.99


def test_fill_holes_matches_scipy():
    from scipy import ndimage

    from pipeline.damage import fill_holes
    rng = np.random.default_rng(0)
    for k in range(40):
        m = ndimage.binary_opening(rng.random((40, 50)) < 0.3 + 0.01 * k)
        if k % 3 == 0:
            m[0, :] = m[:, -1] = True  # touching the image border
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m)), k
    assert not fill_holes(np.zeros((5, 5), bool)).any()


def test_line_share_tells_cracks_from_specks():
    import cv2

    from stages.regions import line_share
    m = np.zeros((80, 80), np.uint8)
    cv2.line(m, (3, 5), (75, 60), 1, 1)          # a thin diagonal crack (8-connected)
    cv2.line(m, (5, 70), (70, 70), 1, 3)         # a wider crease
    assert line_share(m > 0) == 1.0
    cv2.circle(m, (20, 40), 6, 1, -1)            # a round spot apart from both
    spot = (np.pi * 36) / (m > 0).sum()
    assert abs(line_share(m > 0) - (1 - spot)) < 0.05
    specks = np.zeros((80, 80), bool)
    specks[4:80:8, 4:80:8] = True
    specks = cv2.dilate(specks.astype(np.uint8), np.ones((2, 3), np.uint8)) > 0
    assert line_share(specks) == 0.0 and line_share(np.zeros((5, 5), bool)) == 0.0


def test_label4_and_within_match_scipy():
    from scipy import ndimage

    from pipeline.damage import label4
    from stages.processors import _within
    rng = np.random.default_rng(1)
    for k in range(20):
        m = rng.random((60, 70)) < 0.2 + 0.03 * k
        lab, n = label4(m)
        ref, n_ref = ndimage.label(m)
        assert n == n_ref and np.array_equal(lab > 0, m)
        # the same partition: labels map one-to-one
        pairs = np.unique(np.stack([lab[m], ref[m]]), axis=1)
        assert pairs.shape[1] == n
        if k < 8:
            small = np.zeros((60, 70), bool)
            small[20 + k:30, 25:40 + k] = True
            dist = ndimage.distance_transform_edt(~small)
            for r, got in zip((3.0, 6.5, 17.3), _within(small, 3.0, 6.5, 17.3)):
                assert np.array_equal(got, dist <= r), (k, r)


def test_old_photo_damage_is_seeded_soft_and_marks_only_visible_changes():
    from pipeline.damage import REAL_KINDS, add_grain, apply_real_damage, real_damage
    gray = np.full((96, 128), 128, np.uint8)
    a = real_damage(96, 128, np.random.default_rng(3))
    b = real_damage(96, 128, np.random.default_rng(3))
    assert np.array_equal(a.alpha, b.alpha) and a.kinds == b.kinds and set(a.kinds) <= set(REAL_KINDS)
    assert 0 <= a.alpha.min() and a.alpha.max() <= 1 and ((a.alpha > 0) & (a.alpha < 0.5)).any()  # soft edges
    out, mask = apply_real_damage(gray, a, np.random.default_rng(4))
    assert mask.any() and np.all(np.abs(out.astype(int) - 128)[mask] >= 12)
    assert np.array_equal(out[a.alpha == 0], gray[a.alpha == 0])  # untouched where nothing was drawn
    for kind in ("scratch", "crack"):  # thin: a scratch covers little of the image but is long
        d = real_damage(256, 256, np.random.default_rng(5), kinds=(kind,))
        m = d.alpha > 0.5
        assert 0 < m.mean() < 0.08 and np.ptp(np.nonzero(m.any(0))[0]) + np.ptp(np.nonzero(m.any(1))[0]) > 40
    grainy = add_grain(gray, np.random.default_rng(0), 4.0)
    assert 1 < grainy.astype(float).std() < 12 and abs(grainy.mean() - 128) < 1


def test_photo_pairs_draw_old_photo_damage_and_undamaged_negatives():
    from pipeline.data import PhotoPairs
    from pipeline.io import list_images
    from pipeline.data import SAMPLES_DIR
    files = list_images(SAMPLES_DIR)[:2]
    real = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0})
    clean = PhotoPairs(files, 64, True, 0, {"clean_prob": 1.0, "grain_prob": 1.0})
    it = real[(0, 7)]
    changed = (it["gray"] - it["target_gray"]).abs() * 255 >= 11.5
    assert it["mask"].sum() > 0 and bool(changed[it["mask"] > 0].all())  # marked pixels changed visibly
    neg = clean[(1, 7)]
    assert neg["mask"].sum() == 0 and bool((neg["gray"] == neg["target_gray"]).all())


def test_old_prints_fade_and_crack_in_webs_creases_and_flakes():
    from pipeline.damage import OLD_PRINT_KINDS, old_print, real_damage
    from pipeline.data import SAMPLES_DIR, PhotoPairs
    from pipeline.io import list_images
    ramp = np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))
    prints = [old_print(ramp, np.random.default_rng(s)) for s in range(12)]
    assert all(p.shape == ramp.shape and p.dtype == np.uint8 for p in prints)
    assert np.mean([int(p[:, 20:108].max()) - int(p[:, 20:108].min()) for p in prints]) < 235  # contrast fades
    assert np.array_equal(old_print(ramp, np.random.default_rng(1)), prints[1])              # seeded
    for kind in ("web", "crease"):  # thin and long: little of the image, spread over much of it
        m = real_damage(256, 256, np.random.default_rng(8), kinds=(kind,)).alpha > 0.5
        assert 0 < m.mean() < 0.12 and np.ptp(np.nonzero(m.any(0))[0]) > 80, kind
    assert "web" in OLD_PRINT_KINDS
    pairs = PhotoPairs(list_images(SAMPLES_DIR)[:1], 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0})
    it = pairs[(0, 3)]
    assert it["mask"].sum() > 0 and not bool((it["gray"] == it["target_gray"]).all())


def test_worn_lines_zigzag_vary_and_break_and_fine_detail_is_never_damage():
    from pipeline.damage import _layer, add_fine_detail
    from pipeline.data import SAMPLES_DIR, PhotoPairs
    from pipeline.io import list_images
    worn = [_layer(256, 256, "crack", np.random.default_rng(s), worn=True) for s in range(6)]
    plain = [_layer(256, 256, "crack", np.random.default_rng(s)) for s in range(6)]
    # a plain crack is opaque along its length (its peak, within 2 px, near 1); a worn one's varies
    faint = lambda c: np.mean(cv2.dilate(c, np.ones((5, 5), np.uint8))[c > 0.15] < 0.7)  # noqa: E731
    assert np.mean([faint(c) for c in plain]) < 0.1 and np.mean([faint(c) for c in worn]) > 0.25
    web = _layer(256, 256, "web", np.random.default_rng(2), worn=True)
    assert len(np.unique(np.round(web[web > 0.5], 2))) > 5  # each crack of the web its own opacity
    gray = np.full((128, 160), 120, np.uint8)
    detailed = add_fine_detail(gray, np.random.default_rng(4))
    changed = detailed != gray
    assert 0 < changed.mean() < 0.5 and 15 <= detailed.min() and detailed.max() <= 240  # never paper white
    assert np.array_equal(detailed, add_fine_detail(gray, np.random.default_rng(4)))   # seeded
    pairs = PhotoPairs(list_images(SAMPLES_DIR)[:1], 64, True, 0,
                       {"clean_prob": 1.0, "print_prob": 1.0, "detail_prob": 1.0})
    assert all(pairs[(0, s)]["mask"].sum() == 0 for s in range(3))  # the photo's own detail: no damage


def test_shatter_cracks_run_from_edge_to_edge_and_print_kinds_choose_what_a_print_gets():
    from pipeline.damage import real_damage
    from pipeline.data import SAMPLES_DIR, PhotoPairs
    from pipeline.io import list_images
    for s in range(4):
        m = real_damage(256, 256, np.random.default_rng(s), kinds=("shatter",), worn=True).alpha > 0.5
        cols, rows = np.nonzero(m.any(0))[0], np.nonzero(m.any(1))[0]
        assert 0.01 < m.mean() < 0.15 and max(np.ptp(cols), np.ptp(rows)) > 200, s  # long, yet thin
        n, _ = cv2.connectedComponents(m.astype(np.uint8))
        assert n - 1 <= 25, s  # cracks that branch and meet: a few connected pieces, not dust
    files = list_images(SAMPLES_DIR)[:1]
    only = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0, "print_kinds": ["shatter"]})
    default = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0})
    assert only.print_kinds == ("shatter",) and "shatter" not in default.print_kinds
    assert only[(0, 5)]["mask"].sum() > 0


def test_a_scan_blurs_the_damage_with_the_print_and_marks_what_stays_visible():
    from pipeline.damage import apply_real_damage, real_damage, scan, scan_pair
    from pipeline.data import SAMPLES_DIR, PhotoPairs
    from pipeline.io import list_images
    rng = np.random.default_rng(3)
    gray = cv2.GaussianBlur(rng.uniform(60, 190, (128, 128)).astype(np.float32), (0, 0), 6).astype(np.uint8)
    assert np.array_equal(scan(gray, np.random.default_rng(1)), scan(gray, np.random.default_rng(1)))
    flat = np.full((96, 96), 128, np.uint8)
    fine = lambda g: np.std(g.astype(np.float32) - cv2.GaussianBlur(g.astype(np.float32), (0, 0), 1.0))  # noqa: E731
    quiet = [fine(scan(flat, np.random.default_rng(s))) for s in range(8)]
    noisy = [fine(scan(flat, np.random.default_rng(s), noise_max=12)) for s in range(8)]
    assert all(n >= q - 1e-6 for n, q in zip(noisy, quiet)) and sum(noisy) > 1.5 * sum(quiet)  # scan_noise
    sharp = crisp = 0
    for s in range(6):
        r = np.random.default_rng(s)
        dmg = real_damage(128, 128, r, kinds=("scratch", "crack"), worn=True)
        damaged, mask = apply_real_damage(gray, dmg, r)
        seed = np.random.default_rng(s + 100)
        clean_scan, damaged_scan, seen = scan_pair(gray, damaged, dmg, seed)
        assert np.array_equal(clean_scan, scan(gray, np.random.default_rng(np.random.default_rng(s + 100).integers(2 ** 63 - 1))))
        near = cv2.dilate(dmg.alpha, np.ones((3, 3), np.uint8)) > 0.2
        assert seen.any() and not (seen & ~near).any()  # marked: only around the damage, where it shows
        diff = np.abs(damaged_scan.astype(int) - clean_scan.astype(int))
        assert (diff[seen] >= 12).all()
        # the damage's own edges are as soft as the photo's: its steepest step shrinks in the scan
        crisp += np.abs(np.diff(damaged.astype(int), axis=1)).max()
        sharp += np.abs(np.diff(damaged_scan.astype(int), axis=1)).max()
    assert sharp < crisp
    files = list_images(SAMPLES_DIR)[:1]
    plain = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0})
    off = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0, "scan_prob": 0.0})
    on = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "print_prob": 1.0, "scan_prob": 1.0})
    assert all(np.array_equal(plain[(0, k)]["gray"], off[(0, k)]["gray"]) for k in range(3))  # older streams kept
    scanned = [on[(0, k)] for k in range(3)]
    assert any(not np.array_equal(a["gray"], plain[(0, k)]["gray"]) for k, a in enumerate(scanned))
    assert all(a["mask"].sum() > 0 for a in scanned)


def test_relief_cracks_cast_a_shadow_thick_damage_is_coarser_faint_is_fainter_and_edge_detail_follows_the_photo():
    from pipeline.damage import _outlines, add_fine_detail, real_damage
    from pipeline.data import SAMPLES_DIR, PhotoPairs
    from pipeline.io import list_images
    plain = real_damage(128, 128, np.random.default_rng(7), kinds=("crack",), worn=True)
    again = real_damage(128, 128, np.random.default_rng(7), kinds=("crack",), worn=True, relief=0.0, thick=0.0)
    assert np.array_equal(plain.alpha, again.alpha)                 # both 0: the earlier stream
    lifted = real_damage(128, 128, np.random.default_rng(7), kinds=("crack",), worn=True, relief=1.0)
    seen = lifted.alpha > 0.3
    assert (lifted.value[seen] >= 200).any() and (lifted.value[seen] <= 60).any()  # a bright ridge, a dark shadow
    faint = real_damage(128, 128, np.random.default_rng(7), kinds=("crack",), worn=True, faint=1.0)
    assert 0.2 < faint.alpha.max() < 0.75 < plain.alpha.max()   # a hairline crack, a few tens of levels
    # the share of a line's pixels that survive a 3x3 erosion grows with its width
    core = lambda d: cv2.erode((d.alpha > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)).sum() / max(1, (d.alpha > 0.5).sum())  # noqa: E731
    thin = [core(real_damage(256, 256, np.random.default_rng(s), kinds=("scratch",))) for s in range(6)]
    thick = [core(real_damage(256, 256, np.random.default_rng(s), kinds=("scratch",), thick=1.0)) for s in range(6)]
    assert np.mean(thick) > np.mean(thin) + 0.1
    gray = np.full((128, 128), 60, np.uint8)
    gray[32:96, 32:96] = 200                                        # one square: its outline is the only edge
    g = gray.astype(np.float32)
    _outlines(g, gray, np.random.default_rng(5), 90)
    drawn = np.abs(g - gray) > 5
    ring = cv2.dilate((cv2.Canny(gray, 40, 120) > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert drawn.sum() > 50 and not (drawn & ~ring).any()          # along the photo's own edge, nowhere else
    assert not np.array_equal(add_fine_detail(gray, np.random.default_rng(5), edges=1.0),
                              add_fine_detail(gray, np.random.default_rng(5)))
    files = list_images(SAMPLES_DIR)[:1]
    base = {"real_prob": 1.0, "print_prob": 1.0, "detail_prob": 1.0}
    old = PhotoPairs(files, 64, True, 0, base)
    off = PhotoPairs(files, 64, True, 0, {**base, "detail_edges": 0.0, "relief_prob": 0.0, "thick_prob": 0.0,
                                          "faint_prob": 0.0})
    on = PhotoPairs(files, 64, True, 0, {**base, "detail_edges": 1.0, "relief_prob": 1.0, "thick_prob": 1.0,
                                         "faint_prob": 1.0})
    assert all(np.array_equal(old[(0, k)]["gray"], off[(0, k)]["gray"]) for k in range(3))  # older streams kept
    assert any(not np.array_equal(old[(0, k)]["gray"], on[(0, k)]["gray"]) for k in range(3))


def test_turned_old_photo_samples_turn_photo_damage_and_mask_together(tmp_path):
    import torch
    from PIL import Image

    from pipeline.data import PhotoPairs
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = 255                                     # upright: thin vertical lines (poles)
    Image.fromarray(stripes).save(tmp_path / "poles.png")
    files = [tmp_path / "poles.png"]
    plain = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0})
    off = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "turn_prob": 0.0})
    assert all(torch.equal(plain[(0, k)]["gray"], off[(0, k)]["gray"]) for k in range(3))  # older streams kept
    on = PhotoPairs(files, 64, True, 0, {"real_prob": 1.0, "turn_prob": 1.0})
    across = 0
    for k in range(8):
        s = on[(0, k)]
        g, t, m = s["gray"][0], s["target_gray"][0], s["mask"][0] > 0.5
        d = (g - t).abs()
        assert d[m].mean() > 5 * d[~m].mean()                  # the damage lies where the mask says
        dx, dy = (t[:, 1:] - t[:, :-1]).abs().mean(), (t[1:] - t[:-1]).abs().mean()
        across += int(dy > dx)                                # the lines now run across
        luma = (torch.tensor([0.299, 0.587, 0.114])[:, None, None] * s["rgb"]).sum(0)
        assert (luma - t).abs().max() < 1.5 / 255                # the colour photo turned with them
    assert 0 < across < 8


def test_straight_scratches_are_ruler_straight_where_scratches_wander():
    import cv2

    from pipeline.damage import real_damage

    def spreads(kind, worn):  # per long stroke: its spread across (px) and along (px)
        out = []
        for s in range(12):
            d = real_damage(256, 256, np.random.default_rng(s), kinds=(kind,), worn=worn)
            n, lab = cv2.connectedComponents((d.alpha > 0.3).astype(np.uint8), connectivity=8)
            for k in range(1, n):
                ys, xs = np.nonzero(lab == k)
                if len(ys) >= 60:
                    out.append(np.sqrt(np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(float)))))
        return np.array(out)
    for worn in (False, True):
        straight = spreads("straight", worn)
        assert len(straight) >= 10 and np.percentile(straight[:, 0], 90) < 1.6 and np.median(straight[:, 1]) > 20
    assert np.percentile(spreads("scratch", False)[:, 0], 90) > 1.6   # a scratch bends along its length


def test_seeded_damage_streams_are_pinned():
    """The damage package draws the same bytes for the same seed as the single module it replaced
    (these digests were taken from it): every kind, print ageing, fine detail, relief, scans."""
    import hashlib

    from pipeline import damage as D

    def digest(*arrays):
        m = hashlib.sha256()
        for a in arrays:
            m.update(np.ascontiguousarray(a).tobytes())
        return m.hexdigest()[:16]
    gray = np.random.default_rng(7).integers(0, 256, (96, 128)).astype(np.uint8)
    r = np.random.default_rng(5)
    kinds = ("scratch", "crack", "spots", "crease", "tear", "flake", "straight", "shatter", "web")
    rd = D.real_damage(96, 128, r, kinds=kinds, worn=True, relief=0.5, thick=0.3, faint=0.3)
    damaged, mask = D.apply_real_damage(D.add_fine_detail(D.old_print(gray, r), r, 120, edges=1.0), rd, r)
    assert (digest(rd.alpha, rd.value), digest(damaged, mask), digest(D.scan(damaged, r))) == \
        ("d453134ab63e3832", "ffd63dfdd671687f", "fff6447525ff0adf")
    layers = [D._layer(64, 80, k, np.random.default_rng(1), True) for k in sorted(kinds)]
    assert digest(*layers) == "e208a2c6d9acc1b6"


def test_damage_kinds_are_a_registry():
    from pipeline import damage as D
    assert set(D.OLD_PRINT_KINDS) | {"shatter", "straight"} == set(D.KINDS)
    with pytest.raises(ValueError, match="unknown"):
        D._layer(32, 32, "smudge", np.random.default_rng(0))
    with pytest.raises(ValueError, match="twice"):
        D.register_kind("crack")(lambda c, h, w, rng, worn=False: None)

    @D.register_kind("_test_bar")
    def _bar(c, h, w, rng, worn=False):
        c[h // 2] = 1.0
    try:
        rd = D.real_damage(32, 32, np.random.default_rng(0), kinds=("_test_bar",))
        assert rd.kinds == ("_test_bar",) and rd.alpha[16].min() > 0
    finally:
        del D.KINDS["_test_bar"]
