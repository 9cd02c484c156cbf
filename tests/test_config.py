"""Compose every stage x data config group with Hydra, and instantiate what they name."""
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from pipeline.training import CONF_DIR
from stages import STAGES
from tests.conftest import TINY_OVERRIDES

STAGE_NAMES = sorted(p.stem for p in (Path(CONF_DIR) / "stage").glob("*.yaml"))
DATA_NAMES = sorted(p.stem for p in (Path(CONF_DIR) / "data").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def make_dacon(root: Path, n=3, size=64):
    from pipeline.color import pil_gray
    from pipeline.damage import apply_damage, random_damage
    from tests.conftest import colourful
    (root / "train_input").mkdir(parents=True)
    (root / "train_gt").mkdir()
    lines = ["ID,input_image_path,gt_image_path"]
    for i in range(n):
        rgb = colourful(size, size, i)
        d = random_damage(size, size, np.random.default_rng(i))
        Image.fromarray(rgb).save(root / f"train_gt/TRAIN_{i:05d}.png")
        Image.fromarray(apply_damage(pil_gray(rgb), d)).save(root / f"train_input/TRAIN_{i:05d}.png")
        lines.append(f"TRAIN_{i:05d},./train_input/TRAIN_{i:05d}.png,./train_gt/TRAIN_{i:05d}.png")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root


def test_groups_exist():
    assert set(STAGE_NAMES) == set(STAGES) and {"samples", "photos", "dacon"} <= set(DATA_NAMES)


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_a_stage_default_has_one_home_and_conf_holds_overrides_only(stage):
    """The constructor's signature is the one home of each default: conf/stage/<stage>.yaml may
    only override (a key the constructor lacks, or a value equal to its default, fails here), and
    the composed ``model`` node is every constructor argument with the constructor's default."""
    import yaml
    cls = STAGES[stage]
    node = yaml.safe_load((Path(CONF_DIR) / "stage" / f"{stage}.yaml").read_text()).get("model") or {}
    assert set(node) <= set(cls.config_keys())
    assert not {k for k, v in node.items() if cls.defaults()[k] == v}, "a default repeated in conf/"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"stage={stage}"])
    from omegaconf import OmegaConf
    model = OmegaConf.to_container(cfg.model)
    assert model.pop("_target_").split(".")[-1] == cls.__name__
    assert model == {**cls.defaults(), **node}


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_every_setting_is_in_exactly_one_section(stage):
    cls = STAGES[stage]
    sections = cls.sections()
    keys = [k for keys in sections.values() for k in keys]
    assert sorted(keys) == sorted(cls.config_keys()), "a key in no section or in two"
    assert cls.inference_settings() == list(sections["inference"])


@pytest.mark.parametrize("stage", STAGE_NAMES)
@pytest.mark.parametrize("data", DATA_NAMES)
def test_compose_every_stage_and_data(stage, data, tmp_path):
    from pipeline.data import SAMPLES_DIR
    from tests.conftest import SHARED
    if data == "devbench":
        dev = [SHARED / "photos" / "kodak24", SHARED / "photos" / "mcmaster"]
        if not all(d.is_dir() for d in dev):
            pytest.skip("the dev benchmark photos (../shared/data/photos) are not here")
        root = [f"data.root=[{dev[0]},{dev[1]}]"]
    elif data in ("shared_photos", "packed_photos"):  # fixed roots, relative to the repo root
        root = []
    else:
        root = {"samples": [], "photos": [f"data.root={SAMPLES_DIR}"],
                "dacon": [f"data.root={make_dacon(tmp_path / 'd')}"]}[data]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"stage={stage}", f"data={data}", "trainer.image_size=64",
                                          *TINY_OVERRIDES, *root])
    assert cfg.stage == stage and cfg.trainer.image_size == 64
    if data in ("shared_photos", "packed_photos") and not all(Path(r).is_dir() for r in cfg.data.root):
        pytest.skip(f"data={data}: its photo folders are not here")
    model = instantiate(cfg.model)
    assert isinstance(model, STAGES[stage])
    ds = instantiate(cfg.data)
    item = ds.train[0]
    assert item["gray"].shape == (1, 64, 64) and item["rgb"].shape == (3, 64, 64)
    assert len(ds.val) >= 1


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_compose_experiments(exp):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={exp}", "data.root=/nowhere"])
    assert cfg.stage in STAGES and cfg.model._target_.split(".")[-1] == STAGES[cfg.stage].__name__
    assert set(cfg.model) - {"_target_"} == set(STAGES[cfg.stage].config_keys())  # no misspelt key


def test_a_misspelt_setting_on_the_command_line_is_refused():
    from hydra.errors import ConfigCompositionException
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="treshold"):
            compose("train", overrides=["stage=mask", "model.treshold=0.3"])


def test_the_configuration_doc_shows_the_codes_defaults():
    """docs/configuration.md's stage tables are what ``tools/config_reference.py`` prints from the code."""
    import importlib.util
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("config_reference", root / "tools" / "config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.stage_tables() in (root / "docs" / "configuration.md").read_text(), \
        "regenerate: python tools/config_reference.py"


def test_experiments_are_few_and_each_reads_alone():
    """conf/experiment keeps the shipped networks' final steps only, each written out whole."""
    import yaml
    assert len(EXPERIMENTS) <= 20
    for exp in EXPERIMENTS:
        defaults = yaml.safe_load((Path(CONF_DIR) / "experiment" / f"{exp}.yaml").read_text()).get("defaults", [])
        for entry in defaults:
            assert isinstance(entry, dict) and all(k.startswith("override /") for k in entry), (exp, entry)


def _card_commands(card: Path) -> list[list[str]]:
    import shlex
    text = card.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True)[3:] for line in text.splitlines()
            if line.startswith("python -m pipeline.train ")]


@pytest.mark.parametrize("slot", ["mask", "inpaint", "colorize", "scratch", "scratch2"])
def test_each_shipped_network_has_a_model_card_whose_steps_compose(slot):
    """Every step a card names is a command that composes, and the last one is a kept experiment."""
    card = Path(__file__).resolve().parents[1] / "src/pipeline/checkpoints/demo" / slot / "MODEL_CARD.md"
    text = card.read_text()
    for section in ("## From random weights", "## Metrics", "**Parent:**", "**Data:**", "**Date shipped:**"):
        assert section in text, section
    commands = _card_commands(card)
    assert commands, "no training command"
    for overrides in commands:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, "data.root=/nowhere"])
        assert cfg.stage in STAGES
    assert commands[-1][0].startswith("experiment=")
    assert commands[-1][0].split("=", 1)[1] in EXPERIMENTS, "the last step's config is kept in conf/experiment"
