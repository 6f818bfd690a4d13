"""MLflow (its local file store) and W&B (offline) as loggers of a real run, read back with their own tools."""

import json
import re

import pytest

from test_train import config
from headfit.train import train

mlflow = pytest.importorskip("mlflow")
wandb = pytest.importorskip("wandb")


def test_mlflow_run_holds_params_metrics_and_run_files(tmp_path, tiny_encoder):
    store = f"file:{tmp_path / 'mlruns'}"
    train(config(tmp_path, tiny_encoder, "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={store}",
                 "logger.mlflow.tags={}"))
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "headfit"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["config/data/batch_size"] == "32" and run.data.params["lr"] == "5e-05"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert run.data.metrics["val/macro_f1"] == pytest.approx(metrics["val"]["val/macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "val_report.csv", "test_report.csv", "val_confusion_matrix.png"} <= artifacts
    assert (tmp_path / "logs" / "metrics.csv").is_file()  # the CSV logger ran beside it


def test_wandb_offline_run_directory_holds_the_metrics(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no login from the machine's netrc
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(config(tmp_path, tiny_encoder, "logger=wandb"))
    assert wandb.run is None  # finished by headfit: a sweep's next job starts a run of its own
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    logged = _history(next(run_dir.glob("run-*.wandb")))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert logged["val/macro_f1"][-1] == pytest.approx(metrics["val"]["val/macro_f1"])
    assert "test/macro_f1" in logged and "train/loss_epoch" in logged
    assert (run_dir / "files" / "metrics.json").is_file() and (run_dir / "files" / "val_report.csv").is_file()


def _history(path) -> dict:
    """Every value logged under a metric name in an offline W&B run file (`run-*.wandb`), decoded with wandb's own
    protobuf message: the file is a log of Record messages; a history item holds (key or nested_key, value_json)."""
    from wandb.proto.wandb_internal_pb2 import HistoryItem

    data, values = path.read_bytes(), {}
    for match in re.finditer(rb"\n(.)\x12", data, re.S):  # an embedded HistoryItem: tag, length, then its key
        item = HistoryItem()
        try:
            item.ParseFromString(data[match.end() - 1:match.end() - 1 + match.group(1)[0]])
        except Exception:  # not an item: the bytes only looked like one
            continue
        key = item.key or "/".join(item.nested_key)  # wandb writes "val/macro_f1" as nested_key ["val/macro_f1"]
        if key and item.value_json:
            values.setdefault(key, []).append(json.loads(item.value_json))
    return values
