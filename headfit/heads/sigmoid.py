"""Sigmoid head: an independent logit per label, BCEWithLogits; serves multilabel, and binary with 1 logit."""

from headfit.heads.base import Head


class SigmoidHead(Head):
    activation = "sigmoid"
