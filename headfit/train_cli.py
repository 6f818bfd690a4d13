"""headfit-train's entry point, light to start: `--help` (and Hydra's other answers that run nothing: --cfg,
--info, --hydra-help, --shell-completion) composes the configs without importing torch, Lightning, transformers or
datasets; any other call runs the training job (headfit/train.py's `main`). `python train.py` comes here too."""

from __future__ import annotations

import sys
from pathlib import Path

TRAIN_HELP = """headfit-train: fine-tune a text classifier (an encoder with a head per task) on labelled files.

Usage: headfit-train [group=option ...] [key=value ...]
       headfit-train -m key=a,b ...    a sweep: one run per combination (hparams_search=optuna: an Optuna study)
Each run writes config.yaml, metrics.json, reports, plots and checkpoints/ into outputs/<date>/<time>/.
Docs: docs/quickstart.md (first run), docs/configuration.md (every key), docs/concepts.md (the shape contract).

== Configuration groups (group=option) ==
{groups}

== Config{overridden} ==
Any key below can be set with key=value (a key the config does not list: +key=value).

{config}
Hydra's own flags (--cfg job, --info, -m, ...): headfit-train --hydra-help
"""

# Hydra's flags that answer without running the job
HYDRA_ANSWERS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc")


def train() -> None:
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        try:
            print(train_help([arg for arg in sys.argv[1:] if "=" in arg and not arg.startswith("-")]))
        except Exception as error:  # Hydra's own words for an override it cannot apply
            sys.exit(f"headfit-train: {str(error).strip()}")
        return
    if any(arg in HYDRA_ANSWERS or arg.startswith(("--cfg=", "--info=")) for arg in sys.argv[1:]):
        import hydra

        from headfit.configs import config_dir

        hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")(_answers_only)()
        return
    from headfit.train import main

    main()


def _answers_only(cfg) -> None:  # Hydra calls the job only when it is to run, which these flags never ask for
    raise AssertionError("unreachable: Hydra answered --help / --cfg / --info without running the job")


def train_help(overrides: list[str]) -> str:
    """headfit-train --help: the config groups and their options, and the config composed with `overrides`.
    (Hydra's own --help lists the same, re-composing the config once per group: seconds instead of a fraction.)"""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from headfit.configs import config_dir

    directory = Path(config_dir())
    groups = "\n".join(f"{group.name}: {', '.join(sorted(path.stem for path in group.glob('*.yaml')))}"
                       for group in sorted(directory.iterdir()) if group.is_dir() and any(group.glob("*.yaml")))
    with initialize_config_dir(str(directory), version_base="1.3", job_name="train"):
        config = compose("train", overrides=overrides)
    return TRAIN_HELP.format(groups=groups, config=OmegaConf.to_yaml(config),
                             overridden=f" (with {' '.join(overrides)})" if overrides else "")
