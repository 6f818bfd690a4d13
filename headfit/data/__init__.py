"""Data: reading labelled files, the Lightning data module, and the demo dataset.

The names are imported when first used, so that a module of this package that needs neither `datasets` nor
Lightning (windows.py, for predicting one text) is imported without them.
"""

from importlib import import_module

_WHERE = {"TextClassificationDataModule": "headfit.data.datamodule", "demo_datamodule": "headfit.data.demo",
          "write_demo": "headfit.data.demo"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'headfit.data' has no attribute {name!r}")
    value = getattr(import_module(_WHERE[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
