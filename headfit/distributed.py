"""DDP under Hydra, in single runs and inside `-m` sweeps (Lightning issue #11300).

With `strategy=ddp` on one machine, Lightning starts ranks 1..N-1 by running the command line again
(`sys.argv`) with `hydra.run.dir=<hydra.run.dir>` appended. Inside a sweep that command line is the whole
sweep, and `hydra.run.dir` is not the job's directory: the other ranks would start a sweep of their own and
write somewhere else. headfit swaps in a launcher that starts them on *this job* instead:

    python -m headfit.train --config-path <run dir>/.hydra --config-name config \\
        hydra.run.dir=<run dir> hydra.output_subdir=null hydra/job_logging=stdout ...

that is, the config Hydra composed and saved for the job, in the job's own directory, writing no `.hydra/` and
no log file (warnings and errors go to the console). headfit's own writes (config.yaml, metrics.json, reports,
plots, checkpoints, logs) happen on rank 0 only.

A sweep runs its jobs one after the other in one process. So when a job ends, `end_ranks()` waits for the
ranks it started (or stops them if the job failed), closes the process group, and restores the environment
variables the launcher set: the next job starts its own ranks, on a new port.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig

from headfit.errors import HeadfitConfigError
from headfit.lightning_compat import (ChildProcessObserver, SubprocessScriptLauncher, set_launcher,
                                      set_num_threads_if_needed)

log = logging.getLogger("headfit")

# What the launcher sets in this process's environment; restored when the job ends.
RANK_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
_started: list[HydraJobLauncher] = []  # launchers of the running job that started ranks


def launch_ranks_on_this_job(trainer: pl.Trainer) -> None:
    """Under Hydra, make a trainer that would re-run the command line for its other ranks (DDP, FSDP with
    Lightning's script launcher) start them on this job instead (see the module doc)."""
    launcher = trainer.strategy.launcher
    if type(launcher) is SubprocessScriptLauncher and HydraConfig.initialized():
        set_launcher(trainer, HydraJobLauncher(launcher.cluster_environment, launcher.num_processes, launcher.num_nodes))


def end_ranks(failed: bool) -> None:
    """At the end of a job: wait for the ranks it started (stop them if it failed), close the process group,
    restore the environment. Nothing to do in a job that started no ranks."""
    while _started:
        _started.pop().end(failed)


class HydraJobLauncher(SubprocessScriptLauncher):
    """Lightning's launcher for `strategy=ddp` on one machine, starting ranks 1.. on the Hydra job's saved
    config and run directory instead of the command line."""

    def launch(self, function: Callable, *args: Any, trainer: pl.Trainer | None = None, **kwargs: Any) -> Any:
        # Lightning's launch(), with a watchdog the job can switch off before it ends the ranks itself.
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:  # the first of fit/validate/test
            self.saved_environment = {name: os.environ.get(name) for name in RANK_ENVIRONMENT}
            self.saved_threads = torch.get_num_threads()
            self._call_children_scripts()
            self.watchdog = _Watchdog(main_pid=os.getpid(), child_processes=self.procs)
            self.watchdog.start()
            _started.append(self)
        set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        command, cwd = rank_command()
        environment = self.cluster_environment
        os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port),
                          NODE_RANK=str(environment.node_rank()), LOCAL_RANK=str(environment.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            child_environment = {**os.environ, "LOCAL_RANK": str(local_rank), **_python_path()}
            self.procs.append(subprocess.Popen(command, env=child_environment, cwd=cwd))

    def end(self, failed: bool) -> None:
        self.watchdog.stop()
        for process in self.procs:
            if failed:  # they may be waiting for rank 0 in a collective that will never come
                process.kill()
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log.warning("rank process %d did not end 2 minutes after rank 0; stopping it", process.pid)
                process.kill()
                process.wait()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in self.saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.set_num_threads(self.saved_threads)


def rank_command() -> tuple[list[str], str]:
    """The command and working directory of ranks 1..: this job, from the config Hydra saved for it."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir).resolve()
    saved = run_dir / hydra.output_subdir / "config.yaml" if hydra.output_subdir else None
    if saved is None or not saved.is_file():
        raise HeadfitConfigError(
            f"DDP ranks 1.. re-run this job from the config Hydra saves for it, and there is none in {run_dir}",
            where=f"hydra.output_subdir={hydra.output_subdir}",
            fix="leave hydra.output_subdir at its default, .hydra")
    command = [sys.executable, "-m", "headfit.train", "--config-path", str(saved.parent), "--config-name", "config",
               f"hydra.run.dir={_quoted(run_dir)}", "hydra.output_subdir=null",
               f"hydra.job.chdir={str(bool(hydra.job.chdir)).lower()}",
               "hydra/job_logging=stdout", "hydra.job_logging.root.level=WARNING", "hydra/hydra_logging=none"]
    return command, hydra.runtime.cwd


def _python_path() -> dict[str, str]:
    """PYTHONPATH for the ranks, with the directory headfit is imported from when that is a source checkout
    run as `python path/to/train.py` (so that `-m headfit.train` finds it from any working directory)."""
    source = str(Path(__file__).resolve().parents[1])
    if source in {str(Path(path).resolve()) for path in sys.path[1:] if path}:  # installed, or on PYTHONPATH
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}


def _quoted(path: Path) -> str:
    """A path as a Hydra override value (quoted: a path may hold `=`, `,` or spaces)."""
    text = str(path)
    return f"'{text}'" if "'" not in text else '"' + text.replace('"', '\\"') + '"'


class _Watchdog(ChildProcessObserver):
    """Lightning's watchdog: when a rank dies, it ends the others and this process rather than leave them
    blocked in a collective. `stop()` switches it off (the job ends its ranks itself)."""

    def __init__(self, main_pid: int, child_processes: list[subprocess.Popen]):
        super().__init__(main_pid=main_pid, child_processes=child_processes)
        self._lock, self._stopped = threading.Lock(), False

    def _run(self) -> bool:
        with self._lock:
            return self._stopped or super()._run()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
