"""Shared fixtures: a tiny randomly initialised BERT saved like a hub model (no download), and data files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import logging

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

from headfit.data.demo import ASIDES, CLAUSES, OPENERS, SLOTS

@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Take off the log handlers a test left on the root or the headfit logger (a command run in-process, such as a
    Hydra job configuring its logging, leaves handlers that write to that test's captured stream, closed once the
    test ends: a later test's log records then fail with "Logging error"), so that no test logs into another's."""
    loggers = [logging.getLogger(), logging.getLogger("headfit")]
    before = [(logger, set(logger.handlers), logger.level) for logger in loggers]
    yield
    for logger, handlers, level in before:
        for handler in set(logger.handlers) - handlers:
            if not type(handler).__module__.startswith("_pytest"):  # pytest's own come and go with each phase
                logger.removeHandler(handler)
        logger.setLevel(level)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (minutes each)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")])])
def device(request) -> str:
    """The device a test runs on: the CPU, and a CUDA GPU where there is one (`pytest -m cuda`: only those)."""
    return request.param


EXTRA_WORDS = "good bad great awful fine movie film plot this that is was a an it not very sports food weather".split()


def _vocab() -> list[str]:
    words = {w for text in [*sum(CLAUSES.values(), []), *sum(ASIDES.values(), []), *sum(SLOTS.values(), []), *OPENERS]
             for w in re.findall(r"[a-z]+", text.lower())}
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "'", *sorted(words | set(EXTRA_WORDS))]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """Directory with a 2-layer, 32-wide random BERT and a word-level tokenizer, as from save_pretrained."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = _vocab()
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(directory)
    return str(directory)


def write_rows(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """Write rows (dicts) as CSV, TSV or JSONL according to the suffix."""
    fmt = fmt or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_module(module, path: Path) -> Path:
    """Write `module` as a headfit checkpoint at `path`, as training would (no training step taken)."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path
