"""Softmax head: one logit per label, CrossEntropy; serves multiclass, and binary with 2 logits."""

from headfit.heads.base import Head


class SoftmaxHead(Head):
    activation = "softmax"
