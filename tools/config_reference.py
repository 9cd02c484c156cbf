"""Print the stage-settings tables of docs/configuration.md from the code (the one home of the
defaults): ``python tools/config_reference.py``. ``tests/test_config.py`` checks that the doc
holds exactly this text, so a changed default or a new setting shows up there too."""
from stages import STAGES


def _show(v) -> str:
    return {None: "null", True: "true", False: "false"}.get(v, v) if isinstance(v, (bool, type(None))) else str(v)


def stage_tables() -> str:
    """One markdown table per registered stage: section | setting = default."""
    out = []
    for name, cls in STAGES.items():
        d = cls.defaults()
        out += [f"### `{name}` ({cls.__name__})", "", "| section | setting = default |", "|---|---|"]
        out += [f"| {sec} | " + ", ".join(f"`{k}={_show(d[k])}`" for k in keys) + " |"
                for sec, keys in cls.sections().items()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(stage_tables())
