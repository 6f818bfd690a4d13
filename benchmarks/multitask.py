#!/usr/bin/env python
"""Several heads on one encoder (issue #12): one three-level GoEmotions model against three single-level ones.

GoEmotions at three levels: the 28 emotions, Ekman's 6 groups + neutral, and positive/negative/ambiguous +
neutral (the authors' mappings in ../shared/datasets/goemotions/*_mapping.json; a row's coarse labels are the
union of its emotions' groups, and an emotion no group names, neutral, stays itself). With the bundled MiniLM
and the same budget for every run, each in a fresh `python train.py` process with its own run directory and
its own (cold) token cache:

    three-head   experiment=goemotions_hierarchy: one encoder, a sigmoid head per level, decision.hierarchy as
                 --hierarchy says (top_down, the experiment's own, the default; consistent: bottom-up)
    emotion      experiment=goemotions_minilm: the 28 emotions
    ekman        experiment=goemotions_minilm on TSVs this script writes, whose label column is the Ekman level
    sentiment    the same for the sentiment level

Per level: test macro-F1 with the thresholds tuned on dev, from each run's metrics.json (`test/macro_f1`;
three-head: `test/<task>/macro_f1`, with its decoding), and the same recomputed from the best checkpoint's predictions. Per
run: the training job's wall time, and its fit time from train.log ("training done: ... in ..."). Prediction:
texts/s of `Predictor.from_checkpoint(best).predict(test texts)`, one timed pass after a one-batch warm-up; the
three-head model predicts all three levels in one pass, the single-level models' times are summed. Hierarchy:
the three-head model's test predictions decoded with decision.hierarchy=consistent, =top_down and =independent
(with the thresholds its run tuned under --hierarchy), counting (row, emotion) predictions whose Ekman or sentiment
group is not predicted.

    python benchmarks/multitask.py                          # 2 epochs on all 43,410 rows: hours on 2 CPU cores
    python benchmarks/multitask.py --max-train-rows 2000 --epochs 1    # a quick check of the whole script
    python benchmarks/multitask.py --reuse                  # keep finished runs (same budget), redo the rest

Writes its section of docs/benchmarks.md after every run, so a run stopped early keeps what it measured.
Needs ../shared/datasets/goemotions (or --data-dir); without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import machine  # noqa: E402

TITLE = "Multi-task: three GoEmotions levels on one encoder (issue #12)"
LEVELS = ("emotion", "ekman", "sentiment")  # the three-head recipe's task names; emotion is the child of both
DECODINGS = ("consistent", "top_down", "independent")  # decision.hierarchy: the two that agree, then each head alone
MAPPINGS = {"ekman": "ekman_mapping.json", "sentiment": "sentiment_mapping.json"}
# the targets of issue #12
F1_GAP = 0.5        # each level of the three-head model within this many points of its single-level model
TIME_RATIO = 0.45   # three-head training wall time <= this x the three single-level runs' summed time
SPEED_RATIO = 2.5   # predicting all three levels at once >= this x the single-level models' summed throughput
EMOTION_F1 = 46.0   # the three-head model's emotion level, test macro-F1 in percent


# ---- the levels: mappings, derived labels, files --------------------------------------------------

def read_groups(goemotions: Path) -> dict[str, tuple[str, dict[str, list[str]]]]:
    """{coarse level: ("emotion", {coarse label: [emotions]})}, each emotion no group names added as a group of
    its own name (neutral), after the groups: the rule the recipe's `groups` follow."""
    emotions = goemotions.joinpath("labels.txt").read_text(encoding="utf-8").split()
    hierarchy = {}
    for level, name in MAPPINGS.items():
        mapping = json.loads(goemotions.joinpath(name).read_text(encoding="utf-8"))
        named = {child for children in mapping.values() for child in children}
        mapping |= {emotion: [emotion] for emotion in emotions if emotion not in named}
        hierarchy[level] = ("emotion", mapping)
    return hierarchy


def level_labels(goemotions: Path, hierarchy: dict) -> dict[str, list[str]]:
    return {"emotion": goemotions.joinpath("labels.txt").read_text(encoding="utf-8").split(),
            **{level: list(mapping) for level, (_, mapping) in hierarchy.items()}}


def parents(mapping: dict[str, list[str]]) -> dict[str, set[str]]:
    """{child label: {the parent labels whose group holds it}}."""
    found = defaultdict(set)
    for parent, children in mapping.items():
        for child in children:
            found[child].add(parent)
    return found


def read_split(goemotions: Path, split: str, hierarchy: dict) -> tuple[list[str], dict[str, list[set[str]]]]:
    """A split's texts and, per level, each row's set of labels (the coarse ones derived from the emotions)."""
    emotions = goemotions.joinpath("labels.txt").read_text(encoding="utf-8").split()
    up = {level: parents(mapping) for level, (_, mapping) in hierarchy.items()}
    texts, labels = [], {level: [] for level in LEVELS}
    with goemotions.joinpath(f"{split}.tsv").open(encoding="utf-8", newline="") as stream:
        for text, ids, _ in csv.reader(stream, delimiter="\t"):  # quoting as headfit reads it (quality.py)
            fine = {emotions[int(i)] for i in ids.split(",")}
            texts.append(text)
            labels["emotion"].append(fine)
            for level in up:
                labels[level].append(set().union(*(up[level][name] for name in fine)))
    return texts, labels


def write_level_files(goemotions: Path, hierarchy: dict, level: str, directory: Path) -> dict[str, Path]:
    """train/dev/test TSVs (no header: text, comma-separated label names) whose labels are `level`'s."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in ("train", "dev", "test"):
        texts, labels = read_split(goemotions, split, hierarchy)
        paths[split] = directory / f"{level}_{split}.tsv"
        with paths[split].open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter="\t")
            for text, names in zip(texts, labels[level]):
                writer.writerow([text, ",".join(sorted(names))])
    return paths


# ---- training runs ----------------------------------------------------------------------------------

def runs(args: argparse.Namespace, goemotions: Path, hierarchy: dict) -> list[dict[str, Any]]:
    """The four runs, three-head first: name, the levels it predicts, its run directory and overrides."""
    budget = [f"paths.datasets_dir={args.data_dir}", f"trainer.max_epochs={args.epochs}",
              f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"data.max_length={args.max_length}",
              *([f"data.max_train_rows={args.max_train_rows}"] if args.max_train_rows else []),
              "trainer.enable_progress_bar=false"]
    planned = [{"name": "three-head", "levels": LEVELS, "overrides": [
                    "experiment=goemotions_hierarchy", *budget, f"decision.hierarchy={args.hierarchy}",
                    *args.three_head]},
               {"name": "emotion", "levels": ("emotion",), "overrides": ["experiment=goemotions_minilm", *budget]}]
    for level in hierarchy:
        files = write_level_files(goemotions, hierarchy, level, args.runs_dir / "data")
        planned.append({"name": level, "levels": (level,), "overrides": [
            "experiment=goemotions_minilm", *budget, f"data.train_path={files['train']}",
            f"data.val_path={files['dev']}", f"data.test_path={files['test']}", "data.labels_file=null"]})
    for run in planned:
        run["dir"] = args.runs_dir / run["name"]
        # its own token cache: every run tokenises cold, none profits from another's cache
        run["overrides"] += [f"hydra.run.dir={run['dir']}", f"paths.cache_dir={run['dir'] / 'cache'}"]
    return planned


def train(run: dict[str, Any], threads: int, reuse: bool) -> dict[str, Any]:
    """Train `run` in a fresh process (or reuse its finished run directory); its metrics.json and times."""
    record = run["dir"] / "benchmark.json"  # what this script ran there: the overrides and the wall time
    if reuse and (run["dir"] / "metrics.json").is_file() and record.is_file():
        earlier = json.loads(record.read_text())
        if earlier["overrides"] == run["overrides"]:
            print(f"{run['name']}: reusing {run['dir']}", flush=True)
            return {**earlier, "metrics": json.loads((run["dir"] / "metrics.json").read_text()), "reused": True}
        print(f"{run['name']}: {run['dir']} was trained with other overrides; training again", flush=True)
    if run["dir"].exists():
        shutil.rmtree(run["dir"])  # a leftover best.ckpt would make Lightning write best-v1.ckpt beside it
    command = [sys.executable, "train.py", *run["overrides"]]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{run['name']}: training ({' '.join(run['overrides'][:1])} ...) in {run['dir']}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=environment, check=True, stdout=subprocess.DEVNULL)
    done = {"overrides": run["overrides"], "wall_s": time.perf_counter() - started, "fit_s": fit_seconds(run["dir"])}
    record.write_text(json.dumps(done, indent=2) + "\n")
    return {**done, "metrics": json.loads((run["dir"] / "metrics.json").read_text()), "reused": False}


def fit_seconds(run_dir: Path) -> float | None:
    """The fit time (validation included) from ProgressLog's "training done: N optimizer steps in 1h02m" line."""
    log = run_dir / "train.log"
    found = re.findall(r"training done: \d+ optimizer steps in (?:(\d+)h(\d+)m|(\d+)m(\d+)s)",
                       log.read_text(errors="replace") if log.is_file() else "")
    if not found:
        return None
    hours, minutes, short_minutes, seconds = (int(part or 0) for part in found[-1])
    return 3600 * hours + 60 * (minutes + short_minutes) + seconds


def test_f1(metrics: dict[str, Any], task: str | None) -> tuple[float | None, str]:
    """Test macro-F1 (percent) of the model's own decisions (the thresholds tuned on dev; for the three-head model,
    with its decision.hierarchy decoding), and the metrics.json key it came from: `test/[<task>/]macro_f1`, logged
    by the test loop after the decisions were fitted. (`..._tuned` compares thresholds for each head alone, before
    any hierarchy: for one task the same number.)"""
    prefix = f"test/{task}/" if task else "test/"
    test = metrics.get("test") or {}
    for key in (f"{prefix}macro_f1", f"{prefix}macro_f1_tuned"):
        if key in test:
            return 100 * test[key], key
    return None, f"{prefix}macro_f1 (missing)"


# ---- prediction -------------------------------------------------------------------------------------

def decided(result: dict[str, Any]) -> set[str]:
    """The label names one result decides: `labels` (multilabel) or `label` (single-label)."""
    return set(result["labels"]) if "labels" in result else {result["label"]}


def inconsistent(predictions: list[dict[str, dict[str, Any]]], groups: dict) -> dict[str, int]:
    """Per parent task: the (row, child label) predictions whose parent label is not predicted in that row.

    `predictions`: what `Predictor.predict` returns for a multi-task checkpoint, one {task: {"labels"|"label",
    "scores", "probabilities"}} per text. `groups`: {parent task: (child task, {parent label: [child labels]})};
    a child label no group names has the parent label of its own name."""
    counts = {}
    for parent, (child, mapping) in groups.items():
        up = parents(mapping)
        counts[parent] = sum(not (up.get(label) or {label}) & decided(result[parent])
                             for result in predictions for label in decided(result[child]))
    return counts


def macro_f1(truth: list[set[str]], predicted: list[set[str]], labels: list[str]) -> float:
    """Macro-F1 in percent over `labels` (a label with no positives and no predictions scores 0, as torchmetrics)."""
    scores = []
    for label in labels:
        tp = sum(label in t and label in p for t, p in zip(truth, predicted))
        wrong = sum((label in t) != (label in p) for t, p in zip(truth, predicted))
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return 100 * sum(scores) / len(scores)


def timed_predictions(predictor, texts: list[str], batch_size: int) -> tuple[float, list[dict[str, Any]]]:
    predictor.predict(texts[:batch_size], progress=False)  # warm-up: first-call allocations, lazy inits
    started = time.perf_counter()
    results = predictor.predict(texts, progress=False)
    return time.perf_counter() - started, results


def measure_predictions(run: dict[str, Any], done: dict[str, Any], texts: list[str], truth: dict, labels: dict,
                        hierarchy: dict, batch_size: int) -> None:
    """Into `done`: the prediction time over the test texts, macro-F1 per level recomputed from the predictions
    and, for the three-head model, the inconsistent predictions under both decodings."""
    from headfit.predict import Predictor

    predictor = Predictor.from_checkpoint(done["metrics"]["best_checkpoint"], batch_size=batch_size)
    done["device"] = str(predictor.module.device)
    if run["name"] == "three-head":
        done["predict_s"], _ = timed_predictions(predictor, texts, batch_size)  # as trained (--hierarchy)
        decoded = {}
        for decoding in DECODINGS:  # read from the module's hparams at decoding time
            predictor.module.hparams.hierarchy = decoding
            decoded[decoding] = predictor.predict(texts, progress=False)
        done["inconsistent"] = {decoding: inconsistent(results, hierarchy) for decoding, results in decoded.items()}
        done["f1_from_predictions"] = {
            decoding: {level: macro_f1(truth[level], [decided(r[level]) for r in results], labels[level])
                       for level in LEVELS}
            for decoding, results in decoded.items()}
    else:
        done["predict_s"], results = timed_predictions(predictor, texts, batch_size)
        (level,) = run["levels"]
        done["f1_from_predictions"] = {"single": {level: macro_f1(truth[level], [decided(r) for r in results],
                                                                  labels[level])}}
    del predictor
    gc.collect()


# ---- the section ------------------------------------------------------------------------------------

def cell(value: float | None, form: str = ".1f") -> str:
    return "—" if value is None else format(value, form)


def verdict(ok: bool | None) -> str:
    return "not measured yet" if ok is None else ("met" if ok else "**not met**")


def section(args: argparse.Namespace, done: dict[str, dict[str, Any]], info: dict[str, str], load: float,
            rows: int, labels: dict) -> str:
    multi = done.get("three-head")
    f1 = {name: dict(zip(run_levels(name), (test_f1(run["metrics"], level if name == "three-head" else None)
                                            for level in run_levels(name))))
          for name, run in done.items() if "metrics" in run}
    level_rows, gaps = [], {}
    for level in LEVELS:
        single, _ = f1.get(level, {}).get(level, (None, ""))
        three, _ = f1.get("three-head", {}).get(level, (None, ""))
        gaps[level] = None if single is None or three is None else three - single
        recomputed = [done.get(level, {}).get("f1_from_predictions", {}).get("single", {}).get(level),
                      *((multi or {}).get("f1_from_predictions", {}).get(d, {}).get(level)
                        for d in DECODINGS)]
        level_rows.append(f"| {level} | {len(labels[level])} | {cell(single)} | {cell(three)} | "
                          f"{cell(gaps[level], '+.1f')} | {' / '.join(map(cell, recomputed))} |")

    singles = [done.get(level) for level in LEVELS]
    measured = all(run and "wall_s" in run for run in singles)
    summed_wall = sum(run["wall_s"] for run in singles) if measured else None
    summed_fit = sum(run["fit_s"] for run in singles) if measured and all(r["fit_s"] for r in singles) else None
    summed_predict = sum(r["predict_s"] for r in singles) if all(r and "predict_s" in r for r in singles) else None
    cost_rows = []
    for name in ("three-head", *LEVELS):
        run = done.get(name, {})
        speed = rows / run["predict_s"] if "predict_s" in run else None
        state = "failed: " + run["failed"] if "failed" in run else ("reused" if run.get("reused") else "")
        cost_rows.append(f"| {name} ({', '.join(run_levels(name))}) | {cell(minutes(run.get('wall_s')))} | "
                         f"{cell(minutes(run.get('fit_s')))} | {cell(speed, '.0f')} | {state} |")
    cost_rows.append(f"| the three single-level runs together | {cell(minutes(summed_wall))} | "
                     f"{cell(minutes(summed_fit))} | {cell(rows / summed_predict if summed_predict else None, '.0f')}"
                     " (texts / the summed times) | |")

    wall_ratio = multi["wall_s"] / summed_wall if multi and "wall_s" in multi and summed_wall else None
    fit_ratio = multi["fit_s"] / summed_fit if multi and multi.get("fit_s") and summed_fit else None
    speed_ratio = summed_predict / multi["predict_s"] if multi and "predict_s" in multi and summed_predict else None
    counts = (multi or {}).get("inconsistent")
    emotion = f1.get("three-head", {}).get("emotion", (None, ""))[0]
    worst = [gap for gap in gaps.values() if gap is not None]
    keys = sorted({key for levels in f1.values() for _, key in levels.values()})
    verdicts = [
        f"- Each level of the three-head model within {F1_GAP} points of its single-level model: "
        + (verdict(min(worst) >= -F1_GAP) + f" (worst {min(worst):+.1f})" if len(worst) == len(LEVELS)
           else verdict(None)),
        f"- Three-head training <= {TIME_RATIO}x the summed single-level time (job wall time): "
        + (verdict(wall_ratio <= TIME_RATIO) + f" ({wall_ratio:.2f}x"
           + (f"; fit time alone {fit_ratio:.2f}x)" if fit_ratio else ")") if wall_ratio else verdict(None)),
        f"- Predicting all three levels >= {SPEED_RATIO}x the summed single-level throughput: "
        + (verdict(speed_ratio >= SPEED_RATIO) + f" ({speed_ratio:.2f}x)" if speed_ratio else verdict(None)),
        "- 0 inconsistent predictions with consistent decoding (decision.hierarchy=consistent and =top_down): "
        + (verdict(all(sum(counts[d].values()) == 0 for d in DECODINGS[:2] if d in counts)) if counts
           else verdict(None)),
        f"- Emotion level of the three-head model >= {EMOTION_F1} test macro-F1: "
        + (verdict(emotion >= EMOTION_F1) + f" ({emotion:.1f})" if emotion is not None else verdict(None)),
    ]
    hierarchy_line = ("- Three-head test predictions, (row, emotion) pairs whose group is not predicted: "
                      + "; ".join(f"decision.hierarchy={d}: " + ", ".join(f"{level} {n}" for level, n in
                                                                          counts[d].items())
                                  for d in reversed(DECODINGS) if d in counts) + f" (of {rows:,} rows)."
                      if counts else "- Inconsistent predictions: not measured yet.")
    budget = (f"{args.epochs} epoch(s) on {f'{args.max_train_rows:,}' if args.max_train_rows else 'all 43,410'} "
              f"training rows, batch {args.batch_size}, lr {args.lr:g}, max_length {args.max_length}, seed 42")
    devices = sorted({run["device"] for run in done.values() if "device" in run})
    return "\n".join([
        f"Written by `benchmarks/multitask.py` on {time.strftime('%Y-%m-%d %H:%M')}; one run each, wall-clock.",
        "",
        f"- Command: `{command(args)}`",
        f"- Machine: {info['cpu']}; OMP_NUM_THREADS={args.threads}; prediction on "
        f"{', '.join(devices) or '?'}; 1-minute load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} when "
        "this was written (timings are wall-clock: other processes on the machine slow runs unevenly)",
        f"- Versions: {info['versions']}",
        f"- Budget, the same for every run: the bundled MiniLM-L6, {budget}; each run a fresh `python train.py` "
        "process with its own run directory and a cold token cache. Three-head: `experiment=goemotions_hierarchy` "
        "(emotion read from the files; ekman and sentiment derived from it through the authors' mappings; checkpoint "
        f"by `val/mean_macro_f1`{''.join(f'; `{o}`' for o in args.three_head)}). Single-level: "
        "`experiment=goemotions_minilm` on the 28 emotions, and on TSVs of "
        "each coarse level this script writes (a row's coarse labels: the union of its emotions' groups; neutral "
        "stays neutral); checkpoint by `val/macro_f1`.",
        f"- Macro-F1: GoEmotions test set ({rows:,} rows), percent, thresholds tuned per label on dev, from each "
        f"run's metrics.json ({', '.join(f'`{key}`' for key in keys) or 'none read yet'}); 'from predictions': "
        "recomputed here from the best checkpoint's `Predictor.predict` decisions (three-head: with "
        f"decision.hierarchy={' / '.join(DECODINGS)}, with the thresholds tuned under "
        f"decision.hierarchy={args.hierarchy}).",
        f"- Times: the training job's wall time (data, tokenising, fit, tuning, test, reports) and its fit time "
        f"(train.log, validation included). Prediction: `Predictor.from_checkpoint(best, batch_size="
        f"{args.batch_size}).predict(test texts)`, one timed pass after a one-batch warm-up.",
        "",
        "| level | labels | single-level macro-F1 | three-head macro-F1 | three-head - single | from predictions: "
        "single / three-head consistent / top_down / independent |",
        "|---|--:|--:|--:|--:|--:|",
        *level_rows,
        "",
        "| run | job wall time (min) | fit (min) | predict texts/s | note |",
        "|---|--:|--:|--:|---|",
        *cost_rows,
        "",
        hierarchy_line,
        "",
        *verdicts,
    ])


def run_levels(name: str) -> tuple[str, ...]:
    return LEVELS if name == "three-head" else (name,)


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def command(args: argparse.Namespace) -> str:
    defaults = parse_args([])
    flags = [f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
             if key not in ("data_dir", "runs_dir", "reuse", "three_head") and value != getattr(defaults, key)]
    flags += [f"--three-head {override}" for override in args.three_head]
    return " ".join(["python benchmarks/multitask.py", *flags])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="the folder holding goemotions/ (default: ../shared/datasets)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "benchmark-multitask",
                        help="the runs' directories (three-head/, emotion/, ekman/, sentiment/) and the coarse "
                             "levels' TSVs (data/); a run's directory is emptied before it trains")
    parser.add_argument("--epochs", type=int, default=2, help="trainer.max_epochs of every run")
    parser.add_argument("--batch-size", type=int, default=32, help="data.batch_size of every run, and of prediction")
    parser.add_argument("--lr", type=float, default=1e-4, help="optim.lr of every run (the recipes' own)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="data.max_length of every run (the recipes' default; GoEmotions' comments are at most "
                             "33 words, so 64 would cut almost none)")
    parser.add_argument("--max-train-rows", type=int, default=None,
                        help="data.max_train_rows: the same seeded subset in every run (default: all 43,410)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the runs, torch threads here")
    parser.add_argument("--hierarchy", choices=DECODINGS[:2], default="top_down",
                        help="decision.hierarchy of the three-head run (its decisions in metrics.json, and the "
                             "thresholds it tunes)")
    parser.add_argument("--three-head", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for the three-head run alone (repeatable), e.g. tasks.ekman.weight=2; "
                             "the budget stays the same for every run")
    parser.add_argument("--reuse", action="store_true",
                        help="skip a run whose directory holds metrics.json from the same overrides")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    load = os.getloadavg()[0]
    args.data_dir, args.runs_dir = args.data_dir.resolve(), args.runs_dir.resolve()
    goemotions = args.data_dir / "goemotions"
    if not (goemotions / "train.tsv").is_file():
        print(f"skipped: {goemotions} not found (see ../shared/datasets/README.md)")
        return
    import torch

    torch.set_num_threads(args.threads)
    hierarchy = read_groups(goemotions)
    labels = level_labels(goemotions, hierarchy)
    texts, truth = read_split(goemotions, "test", hierarchy)
    info, done, failed = machine(), {}, []
    for run in runs(args, goemotions, hierarchy):
        try:
            done[run["name"]] = train(run, args.threads, args.reuse)
        except subprocess.CalledProcessError as error:  # the others still run; its train.log says why
            done[run["name"]] = {"failed": f"exit status {error.returncode}, see {run['dir'] / 'train.log'}"}
            failed.append(run["name"])
        # after every step: a long benchmark stopped early keeps what it measured
        write_section(TITLE, section(args, done, info, load, len(texts), labels))
        if "failed" in done[run["name"]]:
            continue
        try:
            measure_predictions(run, done[run["name"]], texts, truth, labels, hierarchy, args.batch_size)
        except Exception as error:  # noqa: BLE001 - the training figures stand; the others still run
            traceback.print_exc()
            done[run["name"]]["failed"] = f"prediction: {type(error).__name__}: {str(error).splitlines()[0]}"
            failed.append(run["name"])
        print(f"{run['name']}: " + json.dumps({key: value for key, value in done[run["name"]].items()
                                               if key not in ("metrics", "overrides")}), flush=True)
        write_section(TITLE, section(args, done, info, load, len(texts), labels))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
