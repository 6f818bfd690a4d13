"""headfit: fine-tune text classifiers whose task decides head, loss, targets, metrics and decoding together.

Public API (everything else may change):
    Task                          the shape contract (headfit/task.py)
    ClassifierModule              the LightningModule: encoder + head (headfit/module.py)
    TextClassificationDataModule  labelled CSV/TSV/JSONL files -> batches (headfit/data/)
    Predictor                     a checkpoint that labels texts: .predict, .predict_proba (headfit/predict.py)
    HeadfitError, HeadfitConfigError, HeadfitDataError, HeadfitCheckpointError, HeadfitOutputError

The names are imported when first used (`headfit.Predictor` imports torch and transformers, `headfit.HeadfitError`
does not), so `import headfit` and the commands' `--help` answer at once.
"""

from importlib import import_module

_WHERE = {"Task": "headfit.task", "ClassifierModule": "headfit.module", "TextClassificationDataModule": "headfit.data",
          "Predictor": "headfit.predict", "HeadfitError": "headfit.errors", "HeadfitConfigError": "headfit.errors",
          "HeadfitDataError": "headfit.errors", "HeadfitCheckpointError": "headfit.errors",
          "HeadfitOutputError": "headfit.errors"}

__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'headfit' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
