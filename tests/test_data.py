import numpy as np
import torch

from pipeline.data import DaconData, PhotoData, SampleData, read_pairs_csv
from tests.test_config import make_dacon


def test_dacon_pairs_mask_and_shared_geometry(tmp_path):
    root = make_dacon(tmp_path / "d", n=4, size=80)
    data = DaconData(root, image_size=64, val_fraction=0.25, seed=0)
    assert len(data.train) == 3 and len(data.val) == 1
    torch.manual_seed(0)
    for i in range(3):
        b = data.train[i]
        keep = b["mask"] == 0
        # same crop/flip for input, target and mask: outside the mask input == true gray
        assert torch.equal(b["gray"][keep], b["target_gray"][keep])
        assert b["mask"].sum() > 0 or True
        assert (b["gray"][b["mask"] > 0] * 255).round().unique().numel() <= 1


def test_photo_split_is_seeded_and_val_fixed():
    a, b = SampleData(image_size=64, seed=1), SampleData(image_size=64, seed=1)
    assert a.val.files == b.val.files and not set(a.val.files) & set(a.train.files)
    x, y = a.val[0], a.val[0]
    assert torch.equal(x["gray"], y["gray"]) and torch.equal(x["mask"], y["mask"])
    frac = float(x["mask"].mean())
    assert 0.009 <= frac <= 0.16


def test_train_items_vary_between_draws():
    d = SampleData(image_size=64, seed=0)
    torch.manual_seed(0)
    x, y = d.train[0], d.train[0]
    assert not torch.equal(x["mask"], y["mask"]) or not torch.equal(x["rgb"], y["rgb"])


def test_photo_data_accepts_several_roots(tmp_path):
    from pipeline.data import SAMPLES_DIR
    d = PhotoData([SAMPLES_DIR, SAMPLES_DIR], image_size=32, val_fraction=0.1)
    assert len(d.train) + len(d.val) == 2 * len(list(SAMPLES_DIR.iterdir()))


def test_csv_rows_resolve_against_the_csv(tmp_path):
    root = make_dacon(tmp_path / "d", n=2)
    rows = read_pairs_csv(root / "train.csv")
    assert len(rows) == 2 and all(p.is_file() and g.is_file() for p, g in rows)


def test_stream_sampler_is_a_function_of_seed_and_position():
    from itertools import islice

    from pipeline.data import StreamSampler
    full = list(islice(iter(StreamSampler(10, seed=3)), 35))
    assert sorted(i for i, _ in full[:10]) == list(range(10))  # each epoch is a permutation
    assert full[:10] != full[10:20]                            # and a new one each epoch
    assert list(islice(iter(StreamSampler(10, seed=3, start=17)), 18)) == full[17:]
    assert full != list(islice(iter(StreamSampler(10, seed=4)), 35))
    ranks = [list(islice(iter(StreamSampler(10, seed=3, rank=r, world=2)), 5)) for r in (0, 1)]
    assert sorted(i for part in ranks for i, _ in part) == list(range(10))  # shards cover one epoch


def test_a_sample_seed_fixes_a_training_item(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(tmp_path / f"{k}.png")
    ds = PhotoData(tmp_path, image_size=64, val_fraction=0.5).train
    a, b, c = ds[(0, 11)], ds[(0, 11)], ds[(0, 12)]
    assert torch.equal(a["gray"], b["gray"]) and torch.equal(a["mask"], b["mask"])
    assert not torch.equal(a["mask"], c["mask"])


def test_group_split_keeps_each_group_on_one_side(tmp_path):
    from pipeline.data import _split, group_keys
    names = [f"CamVid_train_{seq}_{i:03d}.jpg" for seq in ("0001TP", "0006R0") for i in range(6)]
    names += [f"photo_{i}.jpg" for i in range(20)]
    keys = group_keys(names, r"^CamVid_[a-z]+_([^_]+)_")
    assert len(set(keys)) == 2 + 20
    for seed in range(20):
        tr, va = _split(len(names), 0.25, seed, keys)
        assert sorted(tr + va) == list(range(len(names))) and 0 < len(va) <= 8
        for seq in ("0001TP", "0006R0"):
            sides = {i in va for i, n in enumerate(names) if seq in n}
            assert len(sides) == 1      # never split across train and val
    assert group_keys(names, None) is None
