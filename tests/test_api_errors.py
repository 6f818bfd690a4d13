"""The Python API refuses in words, never with torch's, pickle's or a TypeError: what notebook users pass either
works or raises a HeadfitError saying what to pass; a file that is not a headfit checkpoint is refused in one
line by every way of loading one; a write the system refuses names the file and leaves no half-written one."""

import errno
import io
import os
import pickle
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

from headfit import ClassifierModule, HeadfitConfigError, HeadfitDataError, HeadfitError, Predictor, Task
from headfit.checkpoint import AtomicCheckpointIO, atomic_save
from headfit.errors import HeadfitCheckpointError, HeadfitOutputError
from headfit.evaluation import evaluate
from headfit.predict import in_input_order
from headfit.train import save_decisions

from test_predict import save_checkpoint


def module(tiny_encoder, **arguments):
    return ClassifierModule(**{"encoder": tiny_encoder, "labels": ["neg", "pos"], "kind": "binary", **arguments})


# ---- the Python API: what notebook users pass ------------------------------------------------------------

def built_encoder_round_trip(tiny_encoder, tmp_path):
    encoder = AutoModel.from_pretrained(tiny_encoder)
    built = module(encoder)
    assert built.encoder is encoder and built.encoder.training  # used as it is, in train mode
    assert all(isinstance(value, (str, int, float, bool, list, dict, type(None))) for value in built.hparams.values())
    assert built.hparams.encoder == tiny_encoder  # its config's _name_or_path
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(built)
    trainer.save_checkpoint(tmp_path / "built.ckpt")
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "built.ckpt")  # rebuilt from encoder_config
    assert torch.equal(loaded.encoder.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)
    assert not loaded.training and not loaded.encoder.training  # eval mode: dropout off, ready to predict


def head_by_name(tiny_encoder, tmp_path):
    built = module(tiny_encoder, head="sigmoid")
    assert built.hparams.head == {"_target_": "headfit.heads.SigmoidHead", "pooling": "mean", "dropout": 0.1,
                                  "hidden_size": None} and built.task.activation == "sigmoid"


def labels_as_a_count(tiny_encoder, tmp_path):
    assert module(tiny_encoder, labels=3, kind="multiclass").task.labels == ("0", "1", "2")


def targets_as_names(tiny_encoder, tmp_path):
    assert Task("binary", ["neg", "pos"]).targets(["pos", "neg"]).tolist() == [1, 0]
    tags = Task("multilabel", ["a", "b", "c"], activation="sigmoid")
    assert tags.targets([["a", "c"], []]).tolist() == [[1, 0, 1], [0, 0, 0]]


def evaluate_into_a_str_path(tiny_encoder, tmp_path):
    evaluate(module(tiny_encoder), torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0]), "val", str(tmp_path))
    assert (tmp_path / "val_report.csv").is_file()


def merging_outputs_without_index(tiny_encoder, tmp_path):
    outputs = [{"probabilities": torch.tensor([[0.9, 0.1]]), "labels": ["neg"]},
               {"probabilities": torch.tensor([[0.2, 0.8]]), "labels": ["pos"]}]
    assert in_input_order(outputs)["labels"] == ["neg", "pos"]  # a user's loader: its own order


@pytest.mark.parametrize("works", [built_encoder_round_trip, head_by_name, labels_as_a_count, targets_as_names,
                                   evaluate_into_a_str_path, merging_outputs_without_index])
def test_what_notebook_users_pass_works(works, tiny_encoder, tmp_path):
    works(tiny_encoder, tmp_path)


REFUSED = {  # case: (arguments to ClassifierModule, or a call; the error; what its message says)
    "lr below zero": ({"lr": -0.001}, HeadfitConfigError, "optim.lr must be a number > 0, got -0.001"),
    "focal gamma a word": ({"focal_gamma": "strong"}, HeadfitConfigError, "loss.focal_gamma must be null or a number"),
    "weight decay below zero": ({"weight_decay": -1}, HeadfitConfigError, "optim.weight_decay"),
    "warm-up above 1": ({"warmup_ratio": 2}, HeadfitConfigError, "optim.warmup_ratio"),
    "min_positives a fraction": ({"min_positives": 1.5}, HeadfitConfigError, "decision.min_positives"),
    "calibrate a word": ({"calibrate": "yes"}, HeadfitConfigError, "decision.calibrate must be true or false"),
    "unknown head name": ({"head": "sigmoidal"}, HeadfitConfigError, "use one of sigmoid, softmax"),
    "labels one string": ({"labels": "pos"}, HeadfitConfigError, "labels=['neg', 'pos'], or labels=3"),
    "encoder a number": ({"encoder": 3}, HeadfitConfigError, "encoder must be a Hugging Face model name"),
    "encoder with a task head": (
        lambda enc: module(BertForSequenceClassification(BertConfig(**BertConfig.from_pretrained(enc).to_dict()))),
        HeadfitConfigError, "model.base_model"),
    "max_length beyond the positions": (
        lambda enc: Predictor(module(enc), AutoTokenizer.from_pretrained(enc), max_length=1000), HeadfitConfigError,
        "bert has 128 positions"),
    "target names unknown": (lambda enc: Task("binary", ["neg", "pos"]).targets(["pos", "meh"]), HeadfitDataError,
                             "row 1 of the batch has the label(s) ['meh']"),
    "outputs partly indexed": (
        lambda enc: in_input_order([{"probabilities": torch.ones(1, 2), "labels": ["a"], "index": torch.tensor([0])},
                                    {"probabilities": torch.ones(1, 2), "labels": ["a"]}]),
        HeadfitDataError, "1 of 2 outputs have no 'index'"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_cannot_work_is_refused_naming_what_to_pass(case, tiny_encoder):
    call, error, message = REFUSED[case]
    with pytest.raises(error) as raised:
        call(tiny_encoder) if callable(call) else module(tiny_encoder, **call)
    assert message in str(raised.value) and raised.value.where and raised.value.fix


# ---- checkpoints: every way of loading one -----------------------------------------------------------------

class RunsCode:
    """Unpickled, it would make a directory: a stand-in for code a checkpoint should never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def bad_file(kind: str, folder: Path, tiny_encoder: str) -> Path:
    path = folder / f"{re.sub(r'[^a-z]+', '-', kind).strip('-')}.ckpt"
    if kind in ("truncated", "empty"):
        good = save_checkpoint(folder / "good.ckpt", tiny_encoder, ["neg", "pos"], "binary").read_bytes()
        path.write_bytes(good[: len(good) // 2] if kind == "truncated" else b"")
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "runs code (torch.save)":
        torch.save({"state_dict": {}, "hyper_parameters": RunsCode(folder / "ran")}, path)
    elif kind == "runs code (pickle)":
        path.write_bytes(pickle.dumps({"hyper_parameters": RunsCode(folder / "ran")}))
    elif kind == "torch file, not headfit's":
        torch.save({"weight": torch.ones(2)}, path)
    return path


WHY = {"truncated": "it is truncated", "empty": "the file is empty", "random bytes": "it is not a file torch.save",
       "runs code (torch.save)": "refused: it holds Python objects that could run code (posix.mkdir); headfit "
                                 "checkpoints load with weights_only",
       "runs code (pickle)": "refused: it holds Python objects that could run code (posix.mkdir)",
       "torch file, not headfit's": "not one headfit wrote: it has no state_dict, hyper_parameters"}
LOADERS = {"ClassifierModule.load_from_checkpoint": ClassifierModule.load_from_checkpoint,
           "Predictor.from_checkpoint": Predictor.from_checkpoint}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", list(WHY))
def test_a_file_that_is_not_a_headfit_checkpoint_is_refused_in_one_line(kind, loader, tmp_path, tiny_encoder):
    path = bad_file(kind, tmp_path, tiny_encoder)
    with pytest.raises(HeadfitCheckpointError) as raised:
        LOADERS[loader](path)
    problem = raised.value.problem
    assert problem.startswith(f"{path} is not a readable headfit checkpoint: ") and WHY[kind] in problem
    assert "\n" not in problem and raised.value.__cause__ is None  # one line; torch's exception is not chained
    assert not (tmp_path / "ran").exists()  # nothing in the file ran


# ---- writes the system refuses -------------------------------------------------------------------------------

class FullDisk(io.FileIO):
    """A file on a disk that fills up after `room` bytes."""
    room = 2000

    def write(self, data):
        if self.tell() + len(memoryview(data).cast("B")) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def save_with_atomic_save(path, tiny_encoder):
    atomic_save({"weights": torch.ones(10_000)}, path)


def save_with_lightning_plugin(path, tiny_encoder):
    AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(10_000)}, path)


def save_decisions_into_best(path, tiny_encoder):
    save_decisions(module(tiny_encoder), path)


@pytest.mark.parametrize("save", [save_with_atomic_save, save_with_lightning_plugin, save_decisions_into_best])
def test_a_full_disk_names_the_file_and_leaves_the_previous_one_whole(save, tmp_path, tiny_encoder, monkeypatch):
    path = save_checkpoint(tmp_path / "best.ckpt", tiny_encoder, ["neg", "pos"], "binary")
    before = path.read_bytes()
    monkeypatch.setattr("headfit.checkpoint.open", lambda file, mode: FullDisk(file, mode.replace("b", "")),
                        raising=False)
    with pytest.raises(HeadfitOutputError) as raised:
        save(path, tiny_encoder)
    message = str(raised.value)
    assert f"{path}: No space left on device" in message and "inline_container" not in message
    assert "free space" in raised.value.fix
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]
    monkeypatch.undo()
    assert ClassifierModule.load_from_checkpoint(path).task.labels == ("neg", "pos")  # still a whole checkpoint


def test_errors_from_python_are_headfit_errors_not_torchs():
    assert issubclass(HeadfitCheckpointError, HeadfitError) and issubclass(HeadfitOutputError, HeadfitError)


def test_a_headfit_error_comes_back_whole_from_another_process():
    # data set-up reads large files in worker processes: what one of them raises must reach the user unchanged
    refused = HeadfitDataError("bytes that are not UTF-8", where="train.csv:3", fix="give data.encoding")
    again = pickle.loads(pickle.dumps(refused))
    assert type(again) is HeadfitDataError and str(again) == str(refused) and again.where == "train.csv:3"
    full = HeadfitOutputError("could not write /x: No space left on device", where="/x", fix="free space")
    full.errno = errno.ENOSPC
    assert pickle.loads(pickle.dumps(full)).errno == errno.ENOSPC
