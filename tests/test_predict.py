"""Prediction from a checkpoint: the Predictor, the headfit-predict command on every input kind, and what a
checkpoint carries (tokenizer, labels, thresholds)."""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitConfigError, HeadfitDataError, Predictor, TextClassificationDataModule
from headfit.predict import main

from conftest import write_rows

ROOT = Path(__file__).resolve().parents[1]
SIGMOID, SOFTMAX = "headfit.heads.SigmoidHead", "headfit.heads.SoftmaxHead"
# Very different lengths, so that sorting by length reorders them and batches need padding.
TEXTS = ["good", "the plot was awful and the film was very bad , not good at all . " * 4, "a fine film",
         "bad", "this movie is great", "it was not very good"]


def save_checkpoint(path: Path, encoder: str, labels, kind, head=SOFTMAX, *, thresholds=None, temperature=1.0,
                    tokenizer=True) -> Path:
    torch.manual_seed(0)  # the same head weights for the same labels: checkpoints differ only where a test says
    module = ClassifierModule(encoder=encoder, labels=labels, kind=kind, head=head)
    if thresholds is not None:
        module.thresholds.fill_(thresholds)
    module.temperature.fill_(temperature)
    if tokenizer:
        module.tokenizer, module.max_length = AutoTokenizer.from_pretrained(encoder), 48
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_encoder) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    encoder = folder / "encoder"  # a copy that is deleted below: the checkpoints must not need it
    shutil.copytree(tiny_encoder, encoder)
    paths = {
        "binary": save_checkpoint(folder / "binary.ckpt", str(encoder), ["neg", "pos"], "binary", SIGMOID,
                                  temperature=2.0),
        "multiclass": save_checkpoint(folder / "multiclass.ckpt", str(encoder), ["food", "sports", "weather"],
                                      "multiclass"),
        "multilabel": save_checkpoint(folder / "multilabel.ckpt", str(encoder), ["food", "sports", "weather"],
                                      "multilabel", SIGMOID),
    }
    shutil.rmtree(encoder)
    return paths


def one_at_a_time(predictor: Predictor, texts: list[str]) -> np.ndarray:
    """Each text alone (no batching, no padding, no sorting): the reference for order and padding."""
    module, rows = predictor.module, []
    with torch.no_grad():
        for text in texts:
            encoded = predictor.tokenizer([text], truncation=True, max_length=predictor.max_length,
                                          return_tensors="pt")
            rows.append(module.decide(module(**encoded))[0][0].numpy())
    return np.stack(rows)


# ---- the Python API ----------------------------------------------------------------------------------

def test_predict_proba_is_in_input_order_and_unchanged_by_batching(checkpoints):
    predictor = Predictor.from_checkpoint(checkpoints["multiclass"], batch_size=2)
    probabilities = predictor.predict_proba(TEXTS)
    assert probabilities.shape == (len(TEXTS), 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, one_at_a_time(predictor, TEXTS), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_predict_gives_names_scores_and_probabilities_per_text(checkpoints, kind):
    predictor = Predictor.from_checkpoint(checkpoints[kind])
    results = predictor.predict(TEXTS)
    probabilities = predictor.predict_proba(TEXTS)
    assert len(results) == len(TEXTS)
    for result, row in zip(results, probabilities):
        assert list(result["scores"]) == predictor.labels  # every label, in label order
        np.testing.assert_allclose(result["probabilities"], row)
        assert result["scores"] == {name: pytest.approx(float(p)) for name, p in zip(predictor.labels, row)}
        if kind == "multilabel":
            assert set(result) == {"labels", "scores", "probabilities"}
            assert result["labels"] == [name for name, p in zip(predictor.labels, row) if p >= 0.5]
        else:
            assert set(result) == {"label", "scores", "probabilities"}
            assert result["label"] == predictor.labels[int(row.argmax())]
    best = predictor.predict(TEXTS[:1], top_k=2)[0]["scores"]
    assert list(best) == [predictor.labels[i] for i in np.argsort(-probabilities[0])[:2]]


def test_binary_sigmoid_head_has_two_probability_columns_with_the_temperature(checkpoints):
    predictor = Predictor.from_checkpoint(checkpoints["binary"])
    assert predictor.module.temperature.item() == 2.0 and predictor.labels == ["neg", "pos"]
    probabilities = predictor.predict_proba(TEXTS[:2])
    encoded = predictor.tokenizer(TEXTS[:2], padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.no_grad():
        logits = predictor.module(**encoded)
    np.testing.assert_allclose(probabilities[:, 1], (logits[:, 0] / 2.0).sigmoid().numpy(), atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


def test_thresholds_saved_in_the_checkpoint_decide(tmp_path, tiny_encoder):
    every = save_checkpoint(tmp_path / "low.ckpt", tiny_encoder, ["a", "b", "c"], "multilabel", SIGMOID,
                            thresholds=0.01)
    none = save_checkpoint(tmp_path / "high.ckpt", tiny_encoder, ["a", "b", "c"], "multilabel", SIGMOID,
                           thresholds=0.99)
    low, high = Predictor.from_checkpoint(every), Predictor.from_checkpoint(none)
    assert low.thresholds == pytest.approx({"a": 0.01, "b": 0.01, "c": 0.01})
    np.testing.assert_allclose(low.predict_proba(TEXTS), high.predict_proba(TEXTS))  # same model, other decisions
    assert [r["labels"] for r in low.predict(TEXTS)] == [["a", "b", "c"]] * len(TEXTS)
    assert [r["labels"] for r in high.predict(TEXTS)] == [[]] * len(TEXTS)


def test_binary_threshold_moves_the_decision_off_the_argmax(tmp_path, tiny_encoder):
    plain = Predictor.from_checkpoint(save_checkpoint(tmp_path / "a.ckpt", tiny_encoder, ["neg", "pos"], "binary"))
    p_pos = plain.predict_proba(TEXTS)[:, 1]
    threshold = float(np.sort(p_pos)[len(p_pos) // 2])  # half the texts at or above it
    tuned = Predictor.from_checkpoint(save_checkpoint(tmp_path / "b.ckpt", tiny_encoder, ["neg", "pos"], "binary",
                                                      thresholds=threshold))
    assert [r["label"] for r in tuned.predict(TEXTS)] == ["pos" if p >= threshold else "neg" for p in p_pos]


def test_texts_must_be_a_list_of_non_empty_strings(checkpoints):
    predictor = Predictor.from_checkpoint(checkpoints["multiclass"])
    with pytest.raises(HeadfitDataError, match="one string"):
        predictor.predict("a fine film")
    with pytest.raises(HeadfitDataError, match=r"texts\[1\] is empty") as error:
        predictor.predict(["good", "  "])
    assert error.value.where == "texts[1]"
    assert predictor.predict_proba([]).shape == (0, 3)


# ---- what a checkpoint carries ---------------------------------------------------------------------

def test_checkpoint_is_readable_with_weights_only_and_holds_the_tokenizer(checkpoints, tiny_encoder):
    state = torch.load(checkpoints["multiclass"], map_location="cpu", weights_only=True)
    saved = state["headfit"]
    assert saved["labels"] == ["food", "sports", "weather"] and saved["kind"] == "multiclass"
    assert "tokenizer.json" in saved["tokenizer"] and saved["max_length"] == 48
    predictor = Predictor.from_checkpoint(checkpoints["multiclass"])  # the encoder copy is gone
    original = AutoTokenizer.from_pretrained(tiny_encoder)
    assert predictor.tokenizer(TEXTS)["input_ids"] == original(TEXTS)["input_ids"]
    assert predictor.max_length == 48


def test_training_with_the_data_module_saves_its_tokenizer_and_max_length(tmp_path, tiny_encoder):
    rows = [{"text": text, "label": label} for text, label in zip(TEXTS, ["pos", "neg"] * 3)]
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(write_rows(tmp_path / "t.csv", rows)),
                                      val_path=str(write_rows(tmp_path / "v.csv", rows)), batch_size=3,
                                      max_length=32, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)["headfit"]
    assert saved["max_length"] == 32 and "tokenizer_config.json" in saved["tokenizer"]
    assert Predictor.from_checkpoint(tmp_path / "m.ckpt").max_length == 32


def test_checkpoint_without_tokenizer_uses_the_encoder_or_says_what_to_do(tmp_path, tiny_encoder):
    encoder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder, encoder)
    path = save_checkpoint(tmp_path / "old.ckpt", str(encoder), ["neg", "pos"], "binary", tokenizer=False)
    assert Predictor.from_checkpoint(path).predict(["good"])[0]["label"] in ("neg", "pos")  # from hparams.encoder
    shutil.rmtree(encoder)
    with pytest.raises(HeadfitConfigError, match="holds no tokenizer") as error:
        Predictor.from_checkpoint(path)
    assert "--tokenizer" in error.value.fix
    assert len(Predictor.from_checkpoint(path, tokenizer=tiny_encoder).predict(["good"])) == 1


def test_loading_into_other_labels_names_both_label_sets(checkpoints, tiny_encoder):
    with pytest.raises(HeadfitConfigError) as error:
        ClassifierModule.load_from_checkpoint(checkpoints["multiclass"], labels=["food", "weather", "sports"])
    message = str(error.value)
    assert "['food', 'sports', 'weather']" in message and "['food', 'weather', 'sports']" in message
    assert "another order" in message

    # Resuming a checkpoint in a run whose data has other labels stops before any weights are loaded.
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    batch = {**tokenizer(TEXTS[:2], padding=True, return_tensors="pt"), "labels": torch.tensor([0, 1])}
    module = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary")
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(HeadfitConfigError, match=r"multiclass labels \['food', 'sports', 'weather'\].*binary "
                                                 r"labels \['neg', 'pos'\]"):
        trainer.fit(module, DataLoader([batch], batch_size=None), ckpt_path=checkpoints["multiclass"])


# ---- the command line, in process (same code as the command) -------------------------------------------

def run_main(args, capsys, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8"))
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_cli_reads_a_txt_file_one_text_a_line(checkpoints, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, out, _ = run_main([checkpoints["multiclass"], "--input", path], capsys)
    records = jsonl(out)
    assert code == 0 and [r["line"] for r in records] == list(range(1, len(TEXTS) + 1))
    expected = Predictor.from_checkpoint(checkpoints["multiclass"]).predict(TEXTS)
    assert [r["label"] for r in records] == [e["label"] for e in expected]
    assert list(records[0]["scores"]) == ["food", "sports", "weather"]
    assert records[1]["scores"]["food"] == pytest.approx(expected[1]["scores"]["food"], abs=1e-5)


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_cli_reads_a_text_column_and_copies_an_id(checkpoints, tmp_path, capsys, suffix):
    rows = [{"id": f"r{i}", "review": text, "stars": 3} for i, text in enumerate(TEXTS)]
    path = write_rows(tmp_path / f"reviews.{suffix}", rows)
    code, out, _ = run_main([checkpoints["multilabel"], "--input", path, "--text-column", "review",
                             "--id-column", "id", "--include-text"], capsys)
    records = jsonl(out)
    assert code == 0 and [r["id"] for r in records] == [f"r{i}" for i in range(len(TEXTS))]
    assert [r["text"] for r in records] == TEXTS
    assert [r["line"] for r in records] == list(range(2, len(TEXTS) + 2) if suffix != "jsonl"
                                                  else range(1, len(TEXTS) + 1))
    expected = Predictor.from_checkpoint(checkpoints["multilabel"]).predict(TEXTS)
    assert [r["labels"] for r in records] == [e["labels"] for e in expected]


def test_cli_reads_a_file_without_header_by_position(checkpoints, tmp_path, capsys):
    path = tmp_path / "plain.tsv"
    path.write_text("".join(f"{text}\t{i}\n" for i, text in enumerate(TEXTS)), encoding="utf-8")
    code, out, _ = run_main([checkpoints["binary"], "-i", path, "--no-header", "--id-column", "1"], capsys)
    assert code == 0 and [r["id"] for r in jsonl(out)] == [str(i) for i in range(len(TEXTS))]


@pytest.mark.parametrize("suffix", ["txt", "csv"])
def test_cli_reads_a_file_in_the_encoding_it_is_told(checkpoints, tmp_path, capsys, suffix):
    texts = ["un café crème", "déjà vu à Noël"]  # bytes that are not UTF-8 in latin-1
    path = tmp_path / f"latin.{suffix}"
    path.write_text(("" if suffix == "txt" else "text\n") + "\n".join(texts) + "\n", encoding="latin-1")
    code, _, err = run_main([checkpoints["binary"], "-i", path], capsys)
    assert code != 0 and "latin" in err and "--encoding" in err and "Traceback" not in err
    code, out, _ = run_main([checkpoints["binary"], "-i", path, "--encoding", "latin-1", "--include-text"], capsys)
    assert code == 0 and [r["text"] for r in jsonl(out)] == texts
    code, _, err = run_main([checkpoints["binary"], "-i", path, "--encoding", "latin-9x"], capsys)
    assert code != 0 and "unknown text encoding 'latin-9x'" in err and "--encoding" in err


def test_cli_reads_stdin_one_text_a_line_or_as_told(checkpoints, capsys, monkeypatch):
    code, out, _ = run_main([checkpoints["binary"]], capsys, "good\r\nbad film\n", monkeypatch)
    assert code == 0 and [r["line"] for r in jsonl(out)] == [1, 2]
    stdin = "".join(json.dumps({"text": text}) + "\n" for text in TEXTS[:3])
    code, out, _ = run_main([checkpoints["binary"], "--input", "-", "--input-format", "jsonl"], capsys, stdin,
                            monkeypatch)
    assert code == 0 and [r["line"] for r in jsonl(out)] == [1, 2, 3]


def test_cli_writes_csv_with_a_score_column_per_label_or_the_top_k(checkpoints, tmp_path, capsys):
    output = tmp_path / "predictions.csv"
    code, _, _ = run_main([checkpoints["multilabel"], *TEXTS[:3], "--output", output], capsys)
    rows = list(csv.DictReader(output.open(encoding="utf-8")))
    assert code == 0 and list(rows[0]) == ["line", "labels", "score_food", "score_sports", "score_weather"]
    expected = Predictor.from_checkpoint(checkpoints["multilabel"]).predict(TEXTS[:3])
    assert [row["labels"] for row in rows] == [",".join(e["labels"]) for e in expected]
    assert float(rows[2]["score_sports"]) == pytest.approx(expected[2]["scores"]["sports"], abs=1e-5)

    code, out, _ = run_main([checkpoints["multiclass"], TEXTS[0], "--output-format", "csv", "--top-k", "2"], capsys)
    header, row = list(csv.reader(io.StringIO(out)))
    assert header == ["line", "label", "top1", "top1_score", "top2", "top2_score"]
    assert row[2] == row[1] and float(row[3]) >= float(row[5])  # the label is the most probable one


def test_cli_stops_at_an_empty_line_naming_it(checkpoints, tmp_path, capsys):
    path = tmp_path / "texts.txt"
    path.write_text("good\nbad\n\nfine film\n", encoding="utf-8")
    code, out, err = run_main([checkpoints["binary"], "--input", path], capsys)
    assert code == 1 and out == ""
    assert f"where: {path}:3" in err and "--on-bad-row skip" in err and "Traceback" not in err


def test_cli_names_the_column_of_an_empty_text(checkpoints, tmp_path, capsys):
    path = write_rows(tmp_path / "reviews.csv", [{"review": "good"}, {"review": " "}])
    code, _, err = run_main([checkpoints["binary"], "-i", path, "--text-column", "review"], capsys)
    assert code == 1 and f"{path}:3, column 'review'" in err


def test_cli_skips_bad_rows_when_told_and_lists_them(checkpoints, tmp_path, capsys):
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"text": "good"}\n{"text": ""}\nnot json\n{"other": "x"}\n{"text": "bad"}\n', encoding="utf-8")
    code, out, err = run_main([checkpoints["binary"], "-i", path, "--on-bad-row", "skip"], capsys)
    assert code == 0 and [r["line"] for r in jsonl(out)] == [1, 5]
    assert "skipped 3 of 5 rows (empty text: 2, unparsable line: 1)" in err
    assert f"{path}:2" in err and f"{path}:3" in err and f"{path}:4" in err


def test_cli_reports_a_missing_text_column(checkpoints, tmp_path, capsys):
    path = write_rows(tmp_path / "reviews.csv", [{"review": "good"}])
    code, _, err = run_main([checkpoints["binary"], "-i", path], capsys)
    assert code == 1 and "has no column 'text'" in err and "--text-column" in err


# ---- the command line as a command ------------------------------------------------------------------

def run(command, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=300)


def test_predict_py_with_texts_as_arguments(checkpoints):
    result = run([sys.executable, "predict.py", str(checkpoints["multiclass"]), "--top-k", "1", *TEXTS[:2]])
    assert result.returncode == 0, result.stderr
    records = jsonl(result.stdout)
    assert [r["line"] for r in records] == [1, 2] and [list(r["scores"]) for r in records] == [[r["label"]]
                                                                                               for r in records]


def test_module_reads_stdin_and_exits_non_zero_on_a_bad_row(checkpoints):
    # (Each command start imports torch and Lightning: seconds. Reading stdin that works is tested in process.)
    result = run([sys.executable, "-m", "headfit.predict", str(checkpoints["binary"])], stdin="good\n   \nbad\n")
    assert result.returncode == 1 and "where: <stdin>:2" in result.stderr and "Traceback" not in result.stderr


def test_console_script(checkpoints):
    """`headfit-predict` exists once the package is installed (`pip install .`, as CI does)."""
    result = run(["headfit-predict", str(checkpoints["binary"]), "a fine film"])
    assert result.returncode == 0, result.stderr
    assert set(jsonl(result.stdout)[0]) == {"line", "label", "scores"}
