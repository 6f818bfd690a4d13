"""The LightningModule with the data module and with plain user code: train, decode, save, load."""

import shutil

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitConfigError, HeadfitDataError, TextClassificationDataModule
from headfit.heads import Head
from headfit.shape_check import check_shapes

from conftest import write_rows

TEXTS = ["the movie was good", "an awful plot", "this film is great", "bad and very bad",
         "a fine film", "not good", "it was great", "the plot was awful"]


def tiny_trainer(**options) -> pl.Trainer:
    defaults = dict(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    return pl.Trainer(**{**defaults, **options})


def datamodule(tmp_path, tiny_encoder, labels, fmt="csv", **options) -> TextClassificationDataModule:
    rows = [{"text": text, "label": label} for text, label in zip(TEXTS, labels)]
    train = write_rows(tmp_path / f"train.{fmt}", rows)
    val = write_rows(tmp_path / f"val.{fmt}", rows[:4])
    return TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(train), val_path=str(val),
                                        batch_size=4, cache_dir=str(tmp_path / "cache"), **options)


SIGMOID, SOFTMAX = "headfit.heads.SigmoidHead", "headfit.heads.SoftmaxHead"
POS_NEG = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]
CASES = {
    "binary names, softmax": ("csv", POS_NEG, SOFTMAX, "binary"),
    "binary 0/1, sigmoid": ("jsonl", [1, 0, 1, 0, 1, 0, 1, 0], SIGMOID, "binary"),
    "binary bools, softmax": ("jsonl", [True, False] * 4, SOFTMAX, "binary"),
    "binary (B,1) lists, sigmoid": ("jsonl", [[1], [0]] * 4, SIGMOID, "binary"),
    "multiclass names, tsv": ("tsv", ["food", "sports", "weather", "food"] * 2, SOFTMAX, "multiclass"),
    "multiclass one-hot": ("jsonl", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]] * 2, SOFTMAX, "multiclass"),
    "multiclass (B,1) index column": ("csv", ["[0]", "[1]", "[2]", "[1]"] * 2, SOFTMAX, "multiclass"),
    "multilabel delimited": ("csv", ["food,sports", "weather", "sports", "food,weather"] * 2, SIGMOID, "multilabel"),
    "multilabel lists": ("jsonl", [["food", "sports"], ["weather"], [], ["food"]] * 2, SIGMOID, "multilabel"),
    "multilabel multi-hot": ("jsonl", [[1, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 1]] * 2, SIGMOID, "multilabel"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_and_label_format_trains_and_decodes_to_names(case, device, tmp_path, tiny_encoder):
    fmt, labels, head, kind = CASES[case]
    dm = datamodule(tmp_path, tiny_encoder, labels, fmt)
    dm.setup("fit")
    assert dm.kind == kind
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, head=head)
    check_shapes(module, next(iter(dm.train_dataloader())))
    before = [p.detach().clone() for p in module.head.parameters()]
    trainer = tiny_trainer(accelerator=device)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and module.device.type == device
    assert any(not torch.equal(a, b.cpu()) for a, b in zip(before, module.head.parameters()))  # it learned something
    predictions = trainer.predict(module, dm.val_dataloader())
    probabilities = torch.cat([p["probabilities"] for p in predictions]).cpu()
    names = [name for p in predictions for name in p["labels"]]
    assert probabilities.shape == (4, len(dm.labels))
    assert len(names) == 4
    flat = [n for row in names for n in row] if kind == "multilabel" else names
    assert set(flat) <= set(dm.labels)
    if head == SOFTMAX or kind == "binary":
        assert torch.allclose(probabilities.sum(1), torch.ones(4))


def test_plain_trainer_with_user_dataloaders_and_column_labels(tiny_encoder):
    """The classic: a 2-logit softmax binary head fed labels of shape (B, 1) from the user's own loader."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    rows = [dict(tokenizer(text), labels=[i % 2]) for i, text in enumerate(TEXTS)]

    def collate(batch):
        padded = tokenizer.pad([{k: v for k, v in r.items() if k != "labels"} for r in batch], return_tensors="pt")
        return {**padded, "labels": torch.tensor([r["labels"] for r in batch])}  # (B, 1)

    loader = DataLoader(rows, batch_size=4, collate_fn=collate)
    module = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary")
    trainer = tiny_trainer()
    trainer.fit(module, loader, loader)
    assert trainer.global_step == 2
    assert set(trainer.callback_metrics) >= {"val/loss", "val/accuracy", "val/macro_f1"}


def test_user_batch_with_bad_labels_fails_in_words(tiny_encoder):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    batch = {**tokenizer(TEXTS[:2], padding=True, return_tensors="pt"), "labels": torch.tensor([0, 5])}
    loader = DataLoader([batch], batch_size=None)
    module = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary")
    with pytest.raises(HeadfitDataError, match="label id 5 is outside the 2 labels"):
        tiny_trainer().fit(module, loader)


def test_load_from_checkpoint_needs_no_config_and_no_original_encoder(tmp_path, tiny_encoder):
    encoder_copy = tmp_path / "encoder"
    shutil.copytree(tiny_encoder, encoder_copy)
    module = ClassifierModule(encoder=str(encoder_copy), labels=["a", "b", "c"], kind="multilabel",
                              head={"_target_": SIGMOID, "pooling": "cls", "hidden_size": 8},
                              class_weights={"b": 2.0})
    trainer = tiny_trainer(max_steps=0)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    shutil.rmtree(encoder_copy)  # the checkpoint alone must be enough

    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.task == module.task
    assert loaded.loss_fn.pos_weight.tolist() == [1.0, 2.0, 1.0]
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    module.eval(), loaded.eval()
    assert torch.allclose(module(**inputs), loaded(**inputs))


def test_class_weights_are_buffers_that_move_with_the_module(device, tiny_encoder):
    module = ClassifierModule(encoder=tiny_encoder, labels=["a", "b", "c"], kind="multiclass",
                              class_weights=[1.0, 2.0, 3.0])
    assert any(buffer is module.loss_fn.weight for buffer in module.buffers())
    module.to(device, torch.float64)
    assert module.loss_fn.weight.dtype == torch.float64 and module.loss_fn.weight.device.type == device
    logits = torch.randn(4, 3, device=device, dtype=torch.float64)
    assert module.loss_fn(logits, module.task.targets(torch.tensor([0, 1, 2, 1], device=device))).isfinite()


def test_balanced_weights_from_the_data(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, ["a", "a", "a", "a", "a", "b", "b", "c"])
    dm.setup("fit")
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, class_weights="balanced",
                              label_counts=dm.label_counts, num_train_rows=dm.num_train_rows)
    assert module.loss_fn.weight.tolist() == pytest.approx([8 / 15, 8 / 6, 8 / 3])


def test_head_that_returns_the_wrong_width_is_caught_before_training(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    dm.setup("fit")
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, head=WrongWidthHead)
    with pytest.raises(HeadfitConfigError, match=r"returns logits \(4, 3\).*needs \(4, 2\)"):
        check_shapes(module, next(iter(dm.train_dataloader())))


class WrongWidthHead(Head):
    activation = "softmax"

    def __init__(self, in_features, num_outputs, **options):
        super().__init__(in_features, num_outputs + 1, **options)


def test_head_without_activation_is_refused(tiny_encoder):
    with pytest.raises(HeadfitConfigError, match="softmax or a sigmoid head"):
        ClassifierModule(encoder=tiny_encoder, labels=["a", "b"], kind="binary", head="torch.nn.Linear")


def test_softmax_head_on_multilabel_data_names_the_keys(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, ["a,b", "a", "b", "a"] * 2)
    dm.setup("fit")
    with pytest.raises(HeadfitConfigError) as error:
        ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, head=SOFTMAX)
    assert "head=sigmoid" in str(error.value)


def test_unknown_encoder_names_the_key(tmp_path):
    with pytest.raises(HeadfitConfigError) as error:
        ClassifierModule(encoder=str(tmp_path / "missing"), labels=["a", "b"], kind="binary")
    assert error.value.where == "encoder.name_or_path"
