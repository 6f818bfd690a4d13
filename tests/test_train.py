"""The Hydra job end to end on the demo data and on user files, with the tiny encoder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from headfit.train import train

from conftest import write_rows

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def config(tmp_path, tiny_encoder, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"encoder.name_or_path={tiny_encoder}", f"paths.output_dir={tmp_path}",
                                           f"paths.cache_dir={tmp_path / 'cache'}",
                                           *FAST, *overrides])


def test_demo_run_writes_config_checkpoint_and_metrics(tmp_path, tiny_encoder):
    monitored = train(config(tmp_path, tiny_encoder))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert monitored == pytest.approx(metrics["val"]["val/macro_f1"])
    assert set(metrics["test"]) == {"test/loss", "test/accuracy", "test/macro_f1"}
    assert Path(metrics["best_checkpoint"]).is_file()
    saved = OmegaConf.load(tmp_path / "config.yaml")
    assert saved.encoder.name_or_path == tiny_encoder and saved.head._target_ == "headfit.heads.SoftmaxHead"
    assert "val/macro_f1" in (tmp_path / "logs" / "metrics.csv").read_text().splitlines()[0]
    logged = OmegaConf.load(tmp_path / "logs" / "hparams.yaml")
    assert logged.labels == ["food", "sports", "technology", "weather"] and logged.head._target_.endswith("SoftmaxHead")


def test_multilabel_demo_is_one_override_away(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "experiment=demo_multilabel"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    both = {f"val/{name}_{at}" for name in ("micro_f1", "macro_f1") for at in ("at_0_5", "tuned")}
    assert set(metrics["val"]) == {"val/loss", "val/micro_f1", "val/macro_f1"} | both  # tuned by default


def test_files_with_sigmoid_head_and_balanced_weights(tmp_path, tiny_encoder, caplog):
    rows = [{"review": text, "sentiment": label} for text, label in
            [("good film", "pos"), ("awful plot", "neg"), ("great movie", "pos"), ("bad", "neg"), ("fine", "pos")] * 4]
    train_path = write_rows(tmp_path / "data" / "train.tsv", rows)
    val_path = write_rows(tmp_path / "data" / "val.jsonl", rows[:5])
    caplog.set_level("INFO")
    train(config(tmp_path, tiny_encoder, "data=files", f"data.train_path={train_path}", f"data.val_path={val_path}",
                 "data.text_column=review", "data.label_column=sentiment", "head=sigmoid", "loss=weighted"))
    assert "task: binary with 2 labels [neg, pos]" in caplog.text
    assert "balanced class weights" in caplog.text
    assert "test" not in json.loads((tmp_path / "metrics.json").read_text())  # no test file given


def test_same_seed_same_result(tmp_path, tiny_encoder):
    first = train(config(tmp_path / "a", tiny_encoder))
    second = train(config(tmp_path / "b", tiny_encoder))
    assert first == second


def run_cli(command, cwd, *overrides):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([*command, *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_cli_reports_a_bad_label_column_without_traceback(tmp_path, tiny_encoder):
    data = write_rows(tmp_path / "train.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}])
    result = run_cli([sys.executable, str(ROOT / "train.py")], tmp_path, f"encoder.name_or_path={tiny_encoder}",
                     "data=files", f"data.train_path={data}", f"data.val_path={data}", "data.label_column=target",
                     f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "has no column 'target'" in output and "data.label_column" in output and "['text', 'label']" in output
    assert "Traceback" not in output


def test_cli_reports_a_missing_required_key_without_traceback(tmp_path, tiny_encoder):
    result = run_cli([sys.executable, str(ROOT / "train.py")], tmp_path, f"encoder.name_or_path={tiny_encoder}",
                     "data=files", f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "data.train_path has no value" in output and "data.train_path=..." in output
    assert "Traceback" not in output


@pytest.mark.skipif(shutil.which("headfit-train") is None, reason="headfit is not installed (pip install .)")
def test_console_script_runs_from_any_directory(tmp_path, tiny_encoder):
    result = run_cli(["headfit-train"], tmp_path, f"encoder.name_or_path={tiny_encoder}", *FAST)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(runs) == 1 and "test" in json.loads(runs[0].read_text())


def test_plots_reach_tensorboard_when_that_logger_is_on(tmp_path, tiny_encoder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(config(tmp_path, tiny_encoder, "logger=[csv,tensorboard]"))
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"plots/val_confusion_matrix", "plots/test_confusion_matrix"} <= set(events.Tags()["images"])
    assert "val/macro_f1" in events.Tags()["scalars"]


@pytest.mark.parametrize("validate_on_stop", [True, False])
def test_a_run_stopped_mid_epoch_by_max_steps_has_a_best_checkpoint_and_decisions(tmp_path, tiny_encoder, caplog,
                                                                                    validate_on_stop):
    # the multilabel demo has 13 training batches an epoch; stop after 3 (validation runs at epoch ends). With the
    # callback the stop validates inside fit (the best-checkpoint callback sees it); without it, train() does after.
    caplog.set_level("INFO")
    train(config(tmp_path, tiny_encoder, "experiment=demo_multilabel", "trainer.max_steps=3",
                 "trainer.limit_train_batches=null", "decision.min_positives=1",
                 *([] if validate_on_stop else ["~callbacks.validate_on_stop"])))
    assert ("without a validation of its final weights" in caplog.text) != validate_on_stop
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_checkpoint"] and Path(metrics["best_checkpoint"]).is_file()
    assert "labels" in metrics["decisions"] and "val/macro_f1" in (tmp_path / "logs" / "metrics.csv").read_text()
    # both numbers, for val and test
    for split in ("val", "test"):
        for name in ("micro_f1", "macro_f1"):
            assert {f"{split}/{name}_at_0_5", f"{split}/{name}_tuned"} <= set(metrics[split])


def test_a_run_that_never_validated_saves_its_final_weights_as_best(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "trainer.check_val_every_n_epoch=2"))  # 1 epoch: no validation in fit
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == str(tmp_path / "checkpoints" / "best.ckpt")
    assert Path(metrics["best_checkpoint"]).is_file()
