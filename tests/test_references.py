"""Reference photos: index, retrieval, registration, verification, and their use in a restore."""
import numpy as np
import pytest
from PIL import Image

from pipeline.color import pil_gray
from pipeline.data import SAMPLES_DIR
from pipeline.io import ImageError
from pipeline.references import Library, main, open_library

SAMPLES = sorted(SAMPLES_DIR.glob("*.jpg"))


def _photo(i: int) -> np.ndarray:
    return np.asarray(Image.open(SAMPLES[i]).convert("RGB"))


def _hole(gray: np.ndarray, box=(60, 100, 70, 130), fill=30):
    g, m = gray.copy(), np.zeros(gray.shape, bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    g[m] = fill
    return g, m


@pytest.fixture(scope="module")
def refdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("refs")
    for i in (0, 1, 2, 3):
        Image.fromarray(_photo(i)[:256, 64:320]).save(d / f"ref{i}.png")     # 256x256 views
    Image.fromarray(_photo(4)[:256, 100:356]).save(d / "shifted4.png")      # photo 4, 100 px to the right
    return d


@pytest.fixture(scope="module")
def library(refdir):
    return Library.build([refdir])


def test_bad_files_are_named_one_line_each_and_the_rest_indexed(refdir, tmp_path, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    for f in refdir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    (d / "notimage.png").write_text("hello")
    Image.fromarray(pil_gray(_photo(5))).save(d / "gray.png")
    Image.fromarray(_photo(6)[:20, :20]).save(d / "tiny.png")
    lib = Library.build([d, tmp_path / "nowhere"])
    err = capsys.readouterr().err
    assert len(lib) == 5
    for name in ("notimage.png", "gray.png", "tiny.png", "nowhere"):
        assert sum(name in line for line in err.splitlines()) == 1, name


def test_the_same_photo_fills_the_hole_exactly_and_gives_its_colour(library, tiny_pipeline):
    truth = _photo(2)[:256, 64:320]
    gray, mask = _hole(pil_gray(truth))
    ref = library.match(gray, mask)
    assert ref is not None and ref.valid.all()
    r = tiny_pipeline.restore(gray, mask=mask, references=library, return_intermediates=True)
    assert np.array_equal(np.asarray(r.gray), pil_gray(truth))                 # the hole's true content
    assert np.abs(np.asarray(r.image).astype(int) - truth).mean() < 1.5        # and its colour
    assert np.abs(np.asarray(r.image.convert("L")).astype(int) - pil_gray(truth)).max() <= 1


def test_a_half_overlapping_view_is_registered_and_used_where_it_covers(library, tiny_pipeline):
    truth = _photo(4)[:256, :256]                      # the reference starts 100 px to its right
    gray, mask = _hole(pil_gray(truth), box=(80, 120, 150, 220))
    ref = library.match(gray, mask)
    assert ref is not None
    assert ref.valid[:, 110:].all() and not ref.valid[:, :95].any()           # registered to the pixel
    plain = tiny_pipeline.restore(gray, mask=mask, return_intermediates=True)
    r = tiny_pipeline.restore(gray, mask=mask, references=library, return_intermediates=True)
    assert np.array_equal(np.asarray(r.gray)[mask], pil_gray(truth)[mask])    # the hole is inside the cover
    err = lambda img: np.abs(np.asarray(img).astype(int) - truth)[:, 120:].mean()  # noqa: E731
    assert err(r.image) < 2 < err(plain.image)


def test_an_unrelated_photo_is_never_used_and_the_result_is_bit_identical(library, tiny_pipeline):
    truth = _photo(7)[:256, 64:320]
    gray, mask = _hole(pil_gray(truth))
    assert library.match(gray, mask) is None
    a = tiny_pipeline.restore(gray, mask=mask, return_intermediates=True)
    b = tiny_pipeline.restore(gray, mask=mask, references=library, return_intermediates=True)
    for part in ("image", "gray", "mask"):
        assert np.array_equal(np.asarray(getattr(a, part)), np.asarray(getattr(b, part)))


def test_index_file_round_trip_and_one_line_errors(library, refdir, tmp_path, capsys):
    assert main(["build", str(refdir), "--out", str(tmp_path / "refs.idx"), "--workers", "1"]) == 0
    assert "indexed 5 photos" in capsys.readouterr().out
    lib = Library.load(tmp_path / "refs.idx")
    assert lib.paths == library.paths and np.array_equal(lib.descriptors, library.descriptors)
    with pytest.raises(ImageError, match="no such reference index"):
        Library.load(tmp_path / "missing.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x00" * 64)
    with pytest.raises(ImageError, match="not a reference index"):
        open_library(tmp_path / "bad.idx")


def test_a_folder_is_indexed_once_into_the_cache_and_left_untouched(refdir):
    before = sorted((f.name, f.stat().st_mtime_ns) for f in refdir.iterdir())
    a = open_library(refdir)
    b = open_library(refdir)
    assert a.paths == b.paths and len(a) == 5
    assert open_library(refdir) is b                      # the cached index is read once per process
    assert sorted((f.name, f.stat().st_mtime_ns) for f in refdir.iterdir()) == before


def test_restore_cli_takes_references(refdir, tmp_path, tiny_pipeline):
    from pipeline.restore import main as restore
    truth = _photo(2)[:256, 64:320]
    gray, mask = _hole(pil_gray(truth))
    Image.fromarray(gray).save(tmp_path / "in.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")  # (the tiny detector is untrained)
    tiny_pipeline.save(tmp_path / "pipe")
    assert restore([str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "pipe"), "--out", str(tmp_path / "o"),
                    "--mask", str(tmp_path / "mask.png"), "--references", str(refdir), "--no-progress",
                    "--save-intermediates"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "in_gray.png")), pil_gray(truth))
    assert restore([str(tmp_path / "in.png"), "--checkpoint", str(tmp_path / "pipe"), "--out", str(tmp_path / "o2"),
                    "--references", str(tmp_path / "nope.idx"), "--no-progress"]) == 2


def test_the_references_colour_reaches_where_it_does_not_cover_by_gray_level():
    """Half covered: the other half's colour is corrected by how the prediction erred on the
    covered half at the same gray levels (here: the network predicts no colour at all)."""
    from stages import Colorizer
    from stages.processors import Reference
    from tests.conftest import tiny
    palette = np.uint8([[200, 60, 50], [40, 160, 60], [60, 80, 200], [220, 200, 60]])
    truth = palette[(np.arange(64)[None, :] // 4 + np.arange(64)[:, None] // 16) % 4]   # the same colours in both halves
    gray = pil_gray(truth)
    valid = np.zeros((64, 64), bool)
    valid[:, :32] = True
    ref = Reference(gray=gray, rgb=np.where(valid[..., None], truth, 0).astype(np.uint8), valid=valid)
    col = tiny(Colorizer, saturation=0.0)
    plain = col.colorize([gray])[0].astype(int)
    used = col.colorize([gray], references=[ref])[0].astype(int)
    assert np.ptp(plain, -1).max() <= 2                                    # no colour of its own
    err = lambda img, cols: np.abs(img[:, cols] - truth[:, cols]).mean()  # noqa: E731
    near, far = slice(0, 24), slice(40, 64)
    assert err(used, near) < 0.2 * err(plain, near)                        # the reference's, where it covers
    assert err(used, far) < 0.5 * err(plain, far)                          # carried beyond it by gray level
