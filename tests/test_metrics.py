import numpy as np
import pytest

from pipeline.color import pil_gray
from pipeline.metrics import hue_correlation, mask_iou_f1, psnr, score
from tests.conftest import colourful


def test_identical_images_score_one():
    img = colourful(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:40] = True
    s = score(img, img, mask)
    assert s["S"] == pytest.approx(1.0) and s["M"] == pytest.approx(1.0) and s["C"] == pytest.approx(1.0)
    assert s["score"] == pytest.approx(1.0)


def test_gray_copy_of_colourful_image_has_no_hue():
    import cv2
    hsv = np.zeros((64, 64, 3), np.uint8)
    hsv[..., 0] = np.linspace(10, 170, 64 * 64).reshape(64, 64).astype(np.uint8)  # no reds
    hsv[..., 1], hsv[..., 2] = 200, 180
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    gray = np.repeat(pil_gray(img)[..., None], 3, -1)
    assert abs(hue_correlation(img, gray)) < 0.3 < hue_correlation(img, img)
    mask = np.zeros((64, 64), bool)
    mask[:20, :20] = True
    s = score(img, gray, mask)
    assert s["score"] < 0.7 and s["score"] == pytest.approx(0.2 * s["S"] + 0.4 * s["M"] + 0.4 * s["C"])


def test_score_matches_skimage_definition():
    from skimage.metrics import structural_similarity
    gt, pred = colourful(48, 48, 2), colourful(48, 48, 3)
    mask = np.zeros((48, 48), bool)
    mask[5:25, 8:30] = True
    dr = pred.max() - pred.min()
    s = score(gt, pred, mask)
    assert s["S"] == pytest.approx(structural_similarity(gt, pred, channel_axis=-1, data_range=dr), abs=1e-9)
    assert s["M"] == pytest.approx(structural_similarity(gt[mask], pred[mask], channel_axis=-1, data_range=dr), abs=1e-9)


def test_known_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True
    b[:, :4] = True
    iou, f1 = mask_iou_f1(a, b)
    assert iou == pytest.approx(0.8) and f1 == pytest.approx(2 * 40 / 90)
    assert mask_iou_f1(np.zeros((3, 3)), np.zeros((3, 3))) == (1.0, 1.0)


def test_psnr():
    a = np.zeros((4, 4))
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 255) == pytest.approx(0.0)


def test_hole_ssim_loss_is_the_m_term_on_gray():
    """The inpainter's hole_ssim equals skimage's SSIM on the (N,3) hole pixels (gray repeated)."""
    import torch
    from skimage.metrics import structural_similarity

    from stages.inpaint import hole_ssim
    rng = np.random.default_rng(0)
    t = rng.random((2, 1, 30, 40))
    p = np.clip(t + rng.normal(0, 0.1, t.shape), 0, 1)
    m = np.zeros_like(t)
    m[0, 0, 5:20, 3:25] = 1
    m[1, 0, 10:25, 8:30] = 1
    ours = float(hole_ssim(torch.tensor(p), torch.tensor(t), torch.tensor(m)))
    ref = np.mean([structural_similarity(np.repeat(t[k, 0][m[k, 0] > 0][:, None], 3, 1),
                                         np.repeat(p[k, 0][m[k, 0] > 0][:, None], 3, 1),
                                         channel_axis=-1, data_range=1.0, win_size=7) for k in range(2)])
    assert abs(ours - ref) < 1e-9
    x = torch.tensor(p, requires_grad=True)
    hole_ssim(x, torch.tensor(t), torch.tensor(m)).backward()
    assert x.grad[torch.tensor(m) == 0].abs().max() == 0 and x.grad.abs().max() > 0  # only the hole
