"""Where headfit's Hydra configs are: conf/ in a source checkout, headfit/conf in an installed wheel. The head
presets there (conf/head/<name>.yaml) are also what `ClassifierModule(head="sigmoid")` takes by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def config_dir() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):  # an installed wheel, or a source checkout
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"headfit's configs are neither in {here / 'conf'} nor in {here.parent / 'conf'}")


def head_presets() -> list[str]:
    """The names of the head presets, e.g. ['sigmoid', 'softmax']."""
    return sorted(path.stem for path in (Path(config_dir()) / "head").glob("*.yaml"))


def head_preset(name: str) -> dict[str, Any] | None:
    """conf/head/<name>.yaml as a plain dict (`_target_` and options), or None when there is no such preset."""
    if name not in head_presets():
        return None
    return OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "head" / f"{name}.yaml"), resolve=True)
