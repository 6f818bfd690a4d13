"""headfit: fine-tune text classifiers whose task decides head, loss, targets, metrics and decoding together.

Public API (everything else may change):
    Task                          the shape contract (headfit/task.py)
    ClassifierModule              the LightningModule: encoder + head (headfit/module.py)
    TextClassificationDataModule  labelled CSV/TSV/JSONL files -> batches (headfit/data/)
    HeadfitError, HeadfitConfigError, HeadfitDataError
"""

from headfit.data import TextClassificationDataModule
from headfit.errors import HeadfitConfigError, HeadfitDataError, HeadfitError
from headfit.module import ClassifierModule
from headfit.task import Task

__all__ = ["ClassifierModule", "HeadfitConfigError", "HeadfitDataError", "HeadfitError", "Task",
           "TextClassificationDataModule"]
__version__ = "0.1.0"
