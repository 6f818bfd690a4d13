"""Sweeps (`python train.py -m ...`): a failed run is recorded and the sweep goes on; at the end, one table.

Each job of a sweep runs `train()` in its own directory. A job that raises writes `failed.json` there (the
error's type, message and traceback) and returns None, which every sweeper takes: the basic sweeper ignores
return values, and the Optuna sweeper records the trial as failed (a NaN would stop it). At the end of the
sweep `SweepSummary` (a Hydra callback, in `conf/train.yaml`) reads every job's `metrics.json` or `failed.json`
and its overrides, prints the runs best first by `optimized_metric`, failures last, and saves the table as
`summary.csv` in the sweep directory.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from headfit.errors import HeadfitError

log = logging.getLogger("headfit")

# hparams_search=optuna reads its direction from optimized_mode: `direction: ${sweep_direction:${optimized_mode}}`
OmegaConf.register_new_resolver("sweep_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode],
                                replace=True)


def record_failure(error: Exception, output_dir: str | Path) -> None:
    """Log why a sweep job failed and write it to `<output_dir>/failed.json`; the sweep goes on."""
    if isinstance(error, HeadfitError):  # the user's to fix: the message says what, where and how
        log.error("this run failed, the sweep goes on:\n%s", error)
    else:
        log.error("this run failed, the sweep goes on", exc_info=error)
    if rank_zero_only.rank == 0:
        failure = {"error": type(error).__name__, "message": str(error),
                   "traceback": "".join(traceback.format_exception(error))}
        (Path(output_dir) / "failed.json").write_text(json.dumps(failure, indent=2) + "\n")


class SweepSummary(Callback):
    """At the end of a sweep, the table of its runs: printed, and saved as `<sweep dir>/summary.csv`.

    Runs that finished come first, sorted by `optimized_metric` (best first, following `optimized_mode`), then
    failed runs with the first line of their error, then runs that left no result (killed). The override
    columns are the overrides that differ between runs; the ones all runs share are in `multirun.yaml`.
    The process exits with 1 when no run of the sweep succeeded, else 0: a sweep in which some combinations
    fail (say `head=softmax,sigmoid` on multiclass data) is still a sweep that worked.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = [read_run(job_dir, sweep_dir, config.hydra.output_subdir) for job_dir in
                find_jobs(sweep_dir, config.hydra.output_subdir)]
        if not runs:
            return
        runs = sort_runs(runs, config.optimized_mode)
        table = summary_table(runs, config.optimized_metric)
        with (sweep_dir / "summary.csv").open("w", newline="", encoding="utf-8") as stream:
            csv.writer(stream).writerows(table)
        finished = sum(run["status"] == "ok" for run in runs)
        print(f"\nSweep summary: {finished} of {len(runs)} runs finished, best first by {config.optimized_metric} "
              f"({config.optimized_mode}); saved as {sweep_dir / 'summary.csv'}\n{format_table(table)}", flush=True)
        if not finished:
            sys.exit(1)


def find_jobs(sweep_dir: Path, output_subdir: str | None) -> list[Path]:
    """Job directories: those Hydra saved overrides in, or train() wrote a result in (whatever the subdir)."""
    found = {path.parent for name in ("metrics.json", "failed.json") for path in sweep_dir.glob(f"**/{name}")}
    if output_subdir:
        found |= {path.parent.parent for path in sweep_dir.glob(f"**/{output_subdir}/overrides.yaml")}
    return sorted(found, key=lambda path: _natural(path.relative_to(sweep_dir).as_posix()))


def read_run(job_dir: Path, sweep_dir: Path, output_subdir: str | None) -> dict[str, Any]:
    run: dict[str, Any] = {"run": job_dir.relative_to(sweep_dir).as_posix(), "overrides": {}, "value": None,
                           "error": ""}
    overrides = job_dir / (output_subdir or ".hydra") / "overrides.yaml"
    if overrides.is_file():
        for override in OmegaConf.load(overrides):
            key, _, value = str(override).partition("=")
            run["overrides"][key] = value
    if (job_dir / "metrics.json").is_file():
        metrics = json.loads((job_dir / "metrics.json").read_text())
        run["status"], run["value"] = "ok", metrics["val"].get(metrics["monitor"])
    elif (job_dir / "failed.json").is_file():
        failure = json.loads((job_dir / "failed.json").read_text())
        first_line = (failure["message"].strip().splitlines() or [""])[0]
        run["status"], run["error"] = "failed", f"{failure['error']}: {first_line}"
    else:
        run["status"] = "no result"
    return run


def sort_runs(runs: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    def key(run: dict[str, Any]) -> tuple:
        value = run["value"]
        missing = value is None or math.isnan(value)
        score = 0.0 if missing else (-value if mode == "max" else value)
        return ({"ok": 0, "failed": 1}.get(run["status"], 2), missing, score, _natural(run["run"]))

    return sorted(runs, key=key)


def summary_table(runs: list[dict[str, Any]], metric: str) -> list[list[str]]:
    keys = list(dict.fromkeys(key for run in runs for key in run["overrides"]))
    varying = [key for key in keys if len({run["overrides"].get(key) for run in runs}) > 1]
    rows = [["run", "status", metric, *varying, "error"]]
    for run in runs:
        value = "" if run["value"] is None else repr(float(run["value"]))
        rows.append([run["run"], run["status"], value, *(run["overrides"].get(key, "") for key in varying),
                     run["error"]])
    return rows


def format_table(table: list[list[str]]) -> str:
    """The table as aligned text; the metric (third column) to 4 decimals, long errors cut."""
    shown = [table[0]] + [[f"{float(cell):.4f}" if i == 2 and cell else cell if len(cell) <= 100 else cell[:97] + "..."
                           for i, cell in enumerate(row)] for row in table[1:]]
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in shown)


def _natural(name: str) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("/"))
