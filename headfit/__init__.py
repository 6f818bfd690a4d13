"""headfit: fine-tune text classifiers whose task decides head, loss, targets, metrics and decoding together.

Public API (everything else may change):
    Task                          the shape contract (headfit/task.py)
    ClassifierModule              the LightningModule: encoder + head (headfit/module.py)
    TextClassificationDataModule  labelled CSV/TSV/JSONL files -> batches (headfit/data/)
    Predictor                     a checkpoint that labels texts: .predict, .predict_proba (headfit/predict.py)
    HeadfitError, HeadfitConfigError, HeadfitDataError
"""

from headfit.data import TextClassificationDataModule
from headfit.errors import HeadfitConfigError, HeadfitDataError, HeadfitError
from headfit.module import ClassifierModule
from headfit.predict import Predictor
from headfit.task import Task

__all__ = ["ClassifierModule", "HeadfitConfigError", "HeadfitDataError", "HeadfitError", "Predictor", "Task",
           "TextClassificationDataModule"]
__version__ = "0.1.0"
