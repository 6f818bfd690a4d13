"""What users reach for after a first run: the lr in the logs, early stopping, the debug group, a quiet terminal."""

import csv
import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from headfit.train import train

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def config(tmp_path, tiny_encoder, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"encoder.name_or_path={tiny_encoder}", f"paths.output_dir={tmp_path}",
                                           f"paths.cache_dir={tmp_path / 'cache'}", *QUIET, *overrides])


def metrics_rows(tmp_path) -> list[dict]:
    with open(tmp_path / "logs" / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_learning_rate_is_logged_every_step(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.log_every_n_steps=1"))
    rows = metrics_rows(tmp_path)
    assert not [column for column in rows[0] if column.startswith("lr-AdamW/pg")]  # groups say what they hold
    rates = [float(row["lr-AdamW/decayed"]) for row in rows if row.get("lr-AdamW/decayed")]  # weights with decay
    assert len(rates) == 4 and rates == sorted(rates, reverse=True) and rates[-1] < rates[0]  # linear decay


def test_early_stopping_stops_a_run_whose_metric_cannot_improve(tmp_path, tiny_encoder, caplog):
    caplog.set_level("INFO")
    # no validation improves optimized_metric (val/macro_f1, at most 1) by more than 1.0
    train(config(tmp_path, tiny_encoder, "trainer.max_epochs=10", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                 "callbacks.early_stopping.patience=2", "callbacks.early_stopping.min_delta=1.0"))
    epochs = {int(row["epoch"]) for row in metrics_rows(tmp_path) if row.get("train/loss_epoch")}
    assert epochs == {0, 1, 2}  # the first validation sets the best, two more without improvement stop it
    assert "early stopping on val/macro_f1 (max) after 2 validations" in caplog.text
    assert Path(json.loads((tmp_path / "metrics.json").read_text())["best_checkpoint"]).is_file()


def test_early_stopping_is_off_by_default_and_refuses_a_bad_patience(tmp_path, tiny_encoder):
    from hydra.utils import instantiate

    from headfit import HeadfitConfigError

    cfg = config(tmp_path, tiny_encoder)
    assert instantiate(cfg.callbacks.early_stopping) is None
    cfg.callbacks.early_stopping.patience = 0
    with pytest.raises(Exception) as error:  # Hydra wraps what the target raises
        instantiate(cfg.callbacks.early_stopping)
    assert isinstance(error.value, HeadfitConfigError) or isinstance(error.value.__cause__, HeadfitConfigError)


def test_debug_fdr_runs_end_to_end(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "debug=fdr"))
    assert (tmp_path / "metrics.json").is_file()


def test_debug_overfit_drives_the_training_loss_down(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "debug=overfit", "optim.lr=1e-3"))
    losses = [float(row["train/loss_epoch"]) for row in metrics_rows(tmp_path) if row.get("train/loss_epoch")]
    assert len(losses) == 30 and losses[-1] < 0.5 * losses[0]


def test_debug_limit_and_profiler_write_what_they_promise(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "debug=profiler", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"))
    assert "run_training_epoch" in (tmp_path / "fit-profile.txt").read_text()


@pytest.mark.parametrize("verbose", [False, True])
def test_lightnings_notes_stay_off_the_terminal_unless_verbose(tmp_path, tiny_encoder, caplog, recwarn, verbose):
    # Lightning's logger writes to the terminal itself (its own handler, no propagation): listen there
    said = []
    listener = logging.Handler()
    listener.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("pytorch_lightning").addHandler(listener)
    caplog.set_level("INFO")
    try:
        train(config(tmp_path, tiny_encoder, "trainer.max_steps=1", "trainer.limit_val_batches=1",
                     "trainer.limit_test_batches=1", f"verbose={str(verbose).lower()}"))
    finally:
        logging.getLogger("pytorch_lightning").removeHandler(listener)
    said = "\n".join(said)
    assert ("litlogger" in said) == verbose and ("TPU available" in said) == verbose
    assert "GPU available" in said  # the rest of what Lightning says stays
    if not verbose:  # (shown once per place when verbose, so maybe by an earlier test)
        assert not [w for w in recwarn if "LeafSpec" in str(w.message)]
    assert "shape check passed" in caplog.text  # and headfit's own logs


@pytest.mark.parametrize("version", ["2.4.3", "3.0.0"])
def test_a_lightning_outside_the_supported_range_stops_naming_it(monkeypatch, version):
    import pytorch_lightning as pl

    from headfit import HeadfitConfigError
    from headfit.lightning_compat import check_lightning

    check_lightning()  # the installed one is supported
    monkeypatch.setattr(pl, "__version__", version)
    with pytest.raises(HeadfitConfigError, match=r">= 2.5, < 3; .* is installed"):
        check_lightning()


def test_importing_headfit_and_writing_plots_leaves_the_process_as_it_was(tmp_path):
    """A notebook's matplotlib backend and warning filters are its own: headfit changes neither, at import or when
    it writes its plots."""
    import subprocess
    import sys

    script = """
import warnings, matplotlib, torch, transformers, pytorch_lightning, datasets, torchmetrics, hydra
import transformers.modeling_utils  # imports accelerate where installed, whose own imports add warning filters
before = list(warnings.filters)
import headfit, headfit.train, headfit.predict, headfit.export, headfit.evaluation, headfit.module
from pathlib import Path
from headfit.plots import save_plots
from headfit.task import Task
task = Task("multiclass", ("a", "b", "c"))
rows = [{"label": n, "f1": 0.5} for n in ("a", "b", "c", "macro", "micro", "weighted")]
paths = save_plots(task, torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 2]), rows,
                   Path(%r), "val")
assert all(path.stat().st_size > 0 for path in paths)
print([f for f in warnings.filters if f not in before], matplotlib.get_backend())
""" % str(tmp_path)
    env = {**__import__("os").environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[] svg"


@pytest.mark.parametrize("flags", [["--help"], ["--help", "experiment=goemotions_hierarchy"], ["--cfg", "job"]])
def test_headfit_train_answers_help_without_importing_torch(flags):
    import subprocess
    import sys

    script = ("import sys; sys.argv = ['headfit-train', *sys.argv[1:]]; from headfit.train_cli import train; train(); "
              "print('heavy:', sorted(m for m in ('torch', 'pytorch_lightning', 'transformers', 'datasets') "
              "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, *flags], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"
    assert ("== Configuration groups" in done.stdout) == (flags[0] == "--help")
    assert "optimized_metric:" in done.stdout and ("emotion:" in done.stdout) == (len(flags) == 2 and "=" in flags[1])


@pytest.mark.parametrize("command", ["headfit.export_cli", "headfit.predict_cli", "headfit.eval"])
def test_the_other_commands_answer_help_without_importing_torch(command):
    import subprocess
    import sys

    script = (f"import sys; from {command} import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('heavy:', sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: headfit-" in done.stdout and done.stdout.strip().splitlines()[-1] == "heavy: []"
