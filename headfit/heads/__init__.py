"""Classification heads. Add one: a module here with a `Head` subclass, plus a YAML in conf/head/ (docs/heads.md)."""

from headfit.heads.base import Head
from headfit.heads.sigmoid import SigmoidHead
from headfit.heads.softmax import SoftmaxHead

__all__ = ["Head", "SigmoidHead", "SoftmaxHead"]
