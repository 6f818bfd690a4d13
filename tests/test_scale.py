"""Sweeps (-m, Optuna) and DDP on 2 CPU processes (gloo), run through the command line as users run them."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from headfit.sweep import SweepSummary
from headfit.train import train

ROOT = Path(__file__).resolve().parents[1]
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def run_cli(cwd, *overrides):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=400)
    return result, result.stdout + result.stderr


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    with (sweep_dir / "summary.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


@pytest.fixture(scope="module")
def encoder_without_dropout(tiny_encoder, tmp_path_factory) -> str:
    """The tiny encoder with dropout off, so that one process and two ranks can compute the same thing."""
    directory = tmp_path_factory.mktemp("tiny-bert-no-dropout") / "encoder"
    shutil.copytree(tiny_encoder, directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


# ---- the summary ---------------------------------------------------------------------------------------


def fake_job(sweep_dir: Path, run: str, overrides: list[str], value: float | None = None, error: str | None = None):
    job = sweep_dir / run
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if value is not None:
        (job / "metrics.json").write_text(json.dumps({"monitor": "val/loss", "val": {"val/loss": value}}))
    if error is not None:
        (job / "failed.json").write_text(json.dumps({"error": "OutOfMemoryError", "message": error}))


def summary_config(sweep_dir: Path, mode: str):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}, "output_subdir": ".hydra"},
                             "optimized_metric": "val/loss", "optimized_mode": mode})


def test_summary_sorts_by_the_metric_and_lists_failures_last(tmp_path, capsys):
    for run, lr, value, error in [("0", "1e-4", 0.9, None), ("1", "3e-4", None, "CUDA out of memory.\nmore"),
                                  ("2", "1e-3", 0.5, None), ("3", "3e-3", None, None), ("10", "1e-5", 0.7, None)]:
        fake_job(tmp_path, run, ["data=demo", f"optim.lr={lr}"], value, error)
    SweepSummary().on_multirun_end(config=summary_config(tmp_path, "min"))
    rows = read_summary(tmp_path)
    assert [row["run"] for row in rows] == ["2", "10", "0", "1", "3"]  # val/loss: lowest first
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "failed", "no result"]
    assert rows[3]["error"] == "OutOfMemoryError: CUDA out of memory."
    assert "data" not in rows[0] and rows[0]["optim.lr"] == "1e-3"  # only the overrides that differ
    assert "3 of 5 runs finished" in capsys.readouterr().out


def test_summary_exits_1_when_no_run_finished(tmp_path):
    fake_job(tmp_path, "0", ["head=sigmoid"], error="a sigmoid head cannot serve a multiclass task")
    with pytest.raises(SystemExit) as exit_:
        SweepSummary().on_multirun_end(config=summary_config(tmp_path, "max"))
    assert exit_.value.code == 1 and read_summary(tmp_path)[0]["status"] == "failed"


# ---- sweeps --------------------------------------------------------------------------------------------


def test_sweep_records_a_failed_combination_and_goes_on(tmp_path, tiny_encoder, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    store = f"file:{tmp_path / 'mlruns'}"  # and each job that ran is a run of its own in the tracker
    result, output = run_cli(tmp_path, "-m", "head=softmax,sigmoid", "optim.lr=1e-3,1e-4",  # sigmoid: multiclass data
                             f"encoder.name_or_path={tiny_encoder}", f"paths.cache_dir={tmp_path / 'cache'}",
                             f"hydra.sweep.dir={sweep_dir}", "logger=[csv,mlflow]",
                             f"logger.mlflow.tracking_uri={store}", *FAST)
    assert result.returncode == 0, output
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # reading the file store, as `mlflow ui` needs too
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(run.data.params["lr"] for run in runs) == ["0.0001", "0.001"]
    rows = read_summary(sweep_dir)
    assert [(row["head"], row["status"]) for row in rows] == [("softmax", "ok")] * 2 + [("sigmoid", "failed")] * 2
    values = [float(row["val/macro_f1"]) for row in rows[:2]]
    assert values == sorted(values, reverse=True)  # optimized_mode=max: best first
    assert "a sigmoid head cannot serve a multiclass task" in rows[2]["error"]
    for row in rows:
        job = sweep_dir / row["run"]
        assert (job / "config.yaml").is_file() and (job / ".hydra" / "overrides.yaml").is_file()
        if row["status"] == "ok":
            metrics = json.loads((job / "metrics.json").read_text())
            assert metrics["val"]["val/macro_f1"] == pytest.approx(float(row["val/macro_f1"]))
            assert Path(metrics["best_checkpoint"]).parent == job / "checkpoints" and not (job / "failed.json").exists()
        else:
            assert json.loads((job / "failed.json").read_text())["error"] == "HeadfitConfigError"
    assert "Sweep summary: 2 of 4 runs finished" in output and "Traceback" not in output


@pytest.mark.parametrize("mode", ["max", "min"])
def test_optuna_direction_follows_optimized_mode(mode):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", f"optimized_mode={mode}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == {"max": "maximize", "min": "minimize"}[mode]
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "data.batch_size", "loss", "head.dropout",
                                             "optim.warmup_ratio"}


def test_optuna_search_writes_results_and_goes_on_after_a_failed_trial(tmp_path, tiny_encoder):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "sweep"
    # With sampler seed 0 the two trials draw head=softmax, then head=sigmoid (which fails on multiclass data).
    result, output = run_cli(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                             "hydra.sweeper.sampler.seed=0", "+hydra.sweeper.params.head='choice(softmax,sigmoid)'",
                             f"encoder.name_or_path={tiny_encoder}", f"paths.cache_dir={tmp_path / 'cache'}",
                             f"hydra.sweep.dir={sweep_dir}", *FAST)
    assert result.returncode == 0, output
    rows = read_summary(sweep_dir)
    assert [(row["head"], row["status"]) for row in rows] == [("softmax", "ok"), ("sigmoid", "failed")]
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params.head == "softmax" and best.best_value == pytest.approx(float(rows[0]["val/macro_f1"]))
    assert set(best.best_params) == {"optim.lr", "data.batch_size", "loss", "head.dropout", "optim.warmup_ratio",
                                     "head"}


# ---- DDP on 2 CPU processes ----------------------------------------------------------------------------

# Equal work in both: the length-grouped sampler cuts the same global batches of 16 rows (batch_size x ranks)
# and gives each of the 2 ranks half; DDP averages the two halves' gradients, which is the gradient of the
# whole batch (the halves are equal: 400 train rows are 25 batches of 16). Dropout is off, as its masks
# cannot match. Evaluation splits the same batches the same way, and the metrics are reduced over both ranks.
SAME_WORK = ["trainer.max_epochs=1", "trainer.limit_train_batches=10", "optim.lr=1e-3", "head.dropout=0.0",
             "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path, encoder_without_dropout):
    run_dir = tmp_path / "run"
    result, output = run_cli(tmp_path, "trainer.devices=2", "trainer.strategy=ddp", "data.batch_size=8",
                             f"encoder.name_or_path={encoder_without_dropout}", f"paths.cache_dir={tmp_path / 'cache'}",
                             f"hydra.run.dir={run_dir}", *SAME_WORK)
    assert result.returncode == 0, output
    assert "MEMBER: 2/2" in output  # rank 1 joined
    ddp = json.loads((run_dir / "metrics.json").read_text())
    assert ddp["world_size"] == 2

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"encoder.name_or_path={encoder_without_dropout}", "data.batch_size=16",
                                          f"paths.output_dir={tmp_path / 'single'}",
                                          f"paths.cache_dir={tmp_path / 'cache'}", *SAME_WORK])
    train(cfg)
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert single["world_size"] == 1
    # Measured here: validation metrics identical, test loss 2.4e-7 apart (float32 sums over 8 rows and over
    # 16 rows round differently). The tolerance leaves room for other CPUs and BLAS builds.
    for split in ("val", "test"):
        for name, value in single[split].items():
            assert ddp[split][name] == pytest.approx(value, abs=1e-4 if name.endswith("loss") else 1e-6), name

    # Only rank 0 wrote, and only into the run directory: no second .hydra/ or log file, no other run dir.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run", "single"]
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".hydra", "checkpoints", "config.yaml", "demo_data", "logs", "metrics.json", "test_confusion_matrix.png",
        "test_report.csv", "train.log", "val_confusion_matrix.png", "val_report.csv"]
    assert (run_dir / "train.log").read_text().count("run directory:") == 1


def test_ddp_inside_a_sweep_gives_each_job_its_own_ranks(tmp_path, tiny_encoder):
    sweep_dir = tmp_path / "sweep"
    result, output = run_cli(tmp_path, "-m", "optim.lr=1e-3,1e-4", "trainer=ddp", "trainer.accelerator=cpu",
                             "trainer.devices=2", f"encoder.name_or_path={tiny_encoder}",
                             f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}", *FAST)
    assert result.returncode == 0, output
    assert output.count("MEMBER: 2/2") == 2  # each job started its own rank 1
    # No rank re-launched the sweep: two jobs, no third, no nested sweep, nothing outside the sweep directory.
    assert output.count("Launching 2 jobs locally") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "sweep"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1", "multirun.yaml", "summary.csv"]
    for job in ("0", "1"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["world_size"] == 2 and Path(metrics["best_checkpoint"]).is_file()
        assert (sweep_dir / job / "config.yaml").is_file() and not (sweep_dir / job / "multirun.yaml").exists()
    assert [row["status"] for row in read_summary(sweep_dir)] == ["ok", "ok"]
