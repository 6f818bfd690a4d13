"""Data: reading labelled files, the Lightning data module, and the demo dataset."""

from headfit.data.datamodule import TextClassificationDataModule
from headfit.data.demo import demo_datamodule, write_demo

__all__ = ["TextClassificationDataModule", "demo_datamodule", "write_demo"]
