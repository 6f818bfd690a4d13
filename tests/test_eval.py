"""headfit-eval: a trained model on a labelled file, read as training reads it, decided as the model decides."""

import csv
import json
import subprocess
import sys

import pytest

from headfit.eval import main
from headfit.export import main as export_main
from headfit.train import train
from test_train import config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder):
    """A multilabel demo run (tuned thresholds) with its test file, checkpoint and ONNX export."""
    run = tmp_path_factory.mktemp("run")
    train(config(run, tiny_encoder, "experiment=demo_multilabel", "trainer.limit_train_batches=4",
                 "trainer.limit_val_batches=null", "trainer.limit_test_batches=null", "decision.min_positives=1"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert export_main([metrics["best_checkpoint"], "--format", "onnx", str(run / "onnx")]) == 0
    return run, metrics


@pytest.mark.parametrize("model", ["checkpoint", "onnx"])
def test_eval_gives_the_training_runs_test_metrics_on_the_same_file(trained, model, tmp_path, capsys):
    run, metrics = trained
    path = metrics["best_checkpoint"] if model == "checkpoint" else str(run / "onnx")
    assert main([path, "--input", str(run / "demo_data" / "test.csv"), "--output-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("micro_f1", "macro_f1", "micro_f1_at_0_5", "macro_f1_at_0_5"):
        trained_value = metrics["test"][f"test/{name}"]
        assert result["eval"][f"eval/{name}"] == pytest.approx(trained_value, abs=1e-6), name
    assert result["rows"] == {"read": 100, "used": 100, "skipped": 0}
    assert {"eval_report.csv", "eval_f1_per_label.png", "eval_pr_curves.png"} <= {p.name for p in tmp_path.iterdir()}
    assert "eval/macro_f1" in capsys.readouterr().out


def test_labels_the_model_does_not_know_stop_naming_both_sets(trained, tmp_path, capsys):
    run, metrics = trained
    path = tmp_path / "new.csv"
    with path.open("w", newline="") as stream:
        csv.writer(stream).writerows([["text", "label"], ["the game was good", "sports"],
                                      ["a rainy day", "weather,cooking"]])
    assert main([metrics["best_checkpoint"], "--input", str(path), "--output-dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    error = error[error.index("headfit-eval:"):]  # the command's own message (not a stale logging handler's noise)
    assert "not trained for: ['cooking']" in error and "['food', 'sports', 'technology', 'weather']" in error
    assert f"{path}:3" in error and "Traceback" not in error
    # skipped instead, counted against the file
    assert main([metrics["best_checkpoint"], "--input", str(path), "--on-bad-row", "skip",
                 "--output-dir", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"] == {"read": 2, "used": 1,
                                                                                    "skipped": 1}


def test_eval_help_answers_without_importing_torch():
    code = ("import sys\nfrom headfit.eval import parse_args\ntry:\n    parse_args(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
