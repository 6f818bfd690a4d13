#!/usr/bin/env python
"""Long documents (issue #13): truncation against windows (`data.long_text=chunk`) and their aggregations.

A long-document task built from SST-2: each document is neutral filler sentences (a fixed corpus of bland factual
sentences this script generates from word lists, seeded) with one labelled SST-2 sentence placed at a random
depth of 0..--max-depth tokens; its label is that sentence's. The depth (tokens of the document before the
sentence, counted with the bundled MiniLM tokenizer that conf/encoder/minilm.yaml names) is drawn stratified:
a third of the documents have the sentence inside the first 128-token window, a third between that and 510
tokens, a third beyond the first 512 (`--depth-sampling uniform`: uniform over 0..--max-depth instead). The
filler runs on after the sentence, so every document has about --max-depth + 20-80 tokens (`--tail N`: for a
random 0..N tokens after it, so a document ends soon after its sentence: the same depths, fewer windows).
`--paired`: each dev sentence in three documents of one length, one per bucket, so that the buckets compare the
same sentences in documents of the same length (with --tail, training documents are long only where the sentence
lies deep; dev documents paired this way are not, so what differs between buckets is the depth alone).

Same model (the bundled MiniLM-L6) and budget for every run, each a fresh `python train.py data=files ...`
process with its own run directory and a cold token cache:

    truncate-128          data.max_length=128 (today's default: the rest is cut)
    truncate-512          data.max_length=512
    chunk-128-mean        data.max_length=128 data.long_text=chunk data.chunk_stride=32 data.max_chunks=K
    chunk-128-max           (K: enough windows for the longest document) with model.chunk_aggregation=mean,
    chunk-128-attention     max or attention

Per run: dev accuracy, overall and by where the labelled sentence lies (inside the first 128-token window,
between, beyond the first 512 tokens), from the best checkpoint's `Predictor.predict` on the dev documents;
training samples/s and tokens/s, the median of the values train.log's progress lines give; and the prediction
cost of a 2,000-token document: `Predictor.predict([doc])` against the sum of its windows' forward passes
(`module.logits` on each window alone, and on the windows as one batch).

    python benchmarks/long_docs.py                 # 5 runs on 2,000 documents: about 10 hours on 2 CPU cores
                                                   # (each chunked run ~3 h: 5.5M window tokens at ~600/s)
    python benchmarks/long_docs.py --train-docs 64 --dev-docs 32 --max-depth 600 --runs-dir /tmp/ldb \\
        --docs /tmp/bench.md                       # a quick check of the whole script
    python benchmarks/long_docs.py --reuse         # keep finished runs (same data and budget), redo the rest
    python benchmarks/long_docs.py --tail 128 --max-chunks-per-batch 32 --speed-rounds 3
                                                   # training tokens/s alone, in paired rounds (below)

`--speed-rounds R` measures training throughput alone, into its own section: R rounds, each a short run
(`trainer.max_steps=--speed-steps`, validation cut to two batches) of every run in --runs, truncate-128 first in
even rounds and last in odd ones, so a slower or faster spell of the machine falls on both; the verdict is the
median over the rounds of each chunked run's tokens/s over truncate-128's in the same round. One full run of each
gives a single figure whose run-to-run spread (~10 % on these machines) is as large as the margin it is judged by.

Writes its section of --docs (docs/benchmarks.md) after every run, so a run stopped early keeps what it
measured. Needs ../shared/datasets/sst2 (or --data-dir); without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from report import BENCHMARKS_MD, REPO, peak_rss_kib, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import machine  # noqa: E402

TITLE = "Long documents: chunk, stride and aggregate (issue #13)"
SPEED_TITLE = "Long documents: training throughput in paired rounds (issue #13)"
RUNS = ("truncate-128", "truncate-512", "chunk-128-mean", "chunk-128-max", "chunk-128-attention")
WINDOW = 128          # the chunked runs' data.max_length, and the "first window" of the depth buckets
LONG = 512            # the longer truncation, and the "beyond" bucket's bound
BUCKETS = ("first", "between", "beyond")
COST_TOKENS = 2000    # the document whose prediction cost is timed
# the targets of issue #13
ACCURACY_GAP = 3.0    # chunked: accuracy beyond 512 tokens within this many points of that in the first window
TOKENS_RATIO = 0.9    # chunked training tokens/s >= this x truncate-128's
COST_RATIO = 1.2      # Predictor.predict of a 2,000-token document <= this x the sum of its windows' passes


# ---- the filler corpus ------------------------------------------------------------------------------

WORDS = {
    "noun": ["fence", "bench", "lamp post", "mailbox", "gate", "bridge", "tower", "kiosk", "fountain", "shed",
             "garage door", "water tank", "bus shelter", "notice board", "bicycle rack", "parking meter"],
    "street": ["elm", "oak", "maple", "mill", "station", "church", "harbor", "market", "north", "river"],
    "color": ["grey", "green", "blue", "white", "brown", "beige", "dark red", "pale yellow"],
    "building": ["library", "post office", "town hall", "museum", "pharmacy", "school", "bakery", "bank",
                 "train station", "swimming pool", "hardware store", "community center"],
    "weekday": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
    "month": ["january", "february", "march", "april", "may", "june", "july", "august", "september",
              "october", "november", "december"],
    "hour": ["seven", "eight", "nine", "ten", "eleven", "noon", "one", "two", "three", "four", "five", "six"],
    "vehicle": ["bus", "ferry", "train", "tram", "shuttle", "delivery van", "mail truck"],
    "place": ["airport", "harbor", "old town", "university", "central square", "north terminal", "hospital",
              "industrial park", "county fairground", "west bank", "city center"],
    "committee": ["planning committee", "school board", "city council", "parish council", "housing office",
                  "budget group", "transport office", "parks department"],
    "topic": ["maintenance", "delivery", "inspection", "cleaning", "budget", "staffing", "parking", "repair",
              "inventory", "recycling"],
    "plural": ["chairs", "tables", "windows", "shelves", "lockers", "desks", "cabinets", "boxes", "folders",
               "lamps", "crates", "files"],
    "room": ["basement", "main hall", "east wing", "storage room", "second floor", "reading room", "lobby",
             "back office"],
    "river": ["mill", "stone", "willow", "clear", "north", "long", "cedar", "black"],
    "direction": ["northern", "southern", "eastern", "western"],
    "container": ["box", "crate", "bag", "carton", "bin", "sack", "case"],
    "material": ["slate", "metal", "tile", "copper", "timber", "concrete", "glass"],
    "unit": ["meters", "kilometers", "minutes", "hours", "days", "pages", "kilograms"],
}
TEMPLATES = [
    "the {noun} on {street} street was painted {color} in {year} .",
    "the {building} opens at {hour} on {weekday} and closes at {hour2} in the evening .",
    "a {vehicle} leaves the {place} every {n} minutes for the {place2} .",
    "the {committee} met on {weekday} to review the {topic} schedule for {month} .",
    "there are {n} {plural} in the {room} of the {building} .",
    "the {river} river runs for {n} kilometers from the {direction} hills to the coast .",
    "each {container} holds {n} {plural} and weighs about {n2} kilograms .",
    "the {topic} report for {month} lists {n} items on {n2} pages .",
    "the {building} was built in {year} and has {n} floors and a {material} roof .",
    "on {weekday} the {building} near the {place} is closed from {hour} until {hour2} for {topic} .",
    "the {committee} keeps its {topic} records in the {room} of the {building} .",
    "the {noun} next to the {building} is {n} {unit} from the {place} .",
    "in {month} the {vehicle} to the {place} runs every {n} minutes instead of every {n2} .",
    "the {building} on {street} street has {n} {plural} and {n2} {plural2} in its {room} .",
]


def filler_corpus(tokenizer, seed: int, size: int = 4000, low: int = 12, high: int = 20) -> tuple[list[str], list[int]]:
    """`size` distinct bland sentences of `low`..`high` tokens (the tokenizer's, no special tokens), seeded."""
    rng = random.Random(seed)
    found: dict[str, None] = {}
    for _ in range(50 * size):
        if len(found) >= 2 * size:
            break
        template = rng.choice(TEMPLATES)
        values = {key: rng.choice(words) for key, words in WORDS.items()}
        values |= {"hour2": rng.choice(WORDS["hour"]), "place2": rng.choice(WORDS["place"]),
                   "plural2": rng.choice(WORDS["plural"]), "year": str(rng.randrange(1890, 2020)),
                   "n": str(rng.randrange(2, 60)), "n2": str(rng.randrange(2, 60))}
        found[template.format(**values)] = None
    sentences = list(found)
    lengths = [len(ids) for ids in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
    kept = [(s, n) for s, n in zip(sentences, lengths) if low <= n <= high]
    rng.shuffle(kept)
    kept = kept[:size]
    return [s for s, _ in kept], [n for _, n in kept]


# ---- documents --------------------------------------------------------------------------------------

def read_sst2(path: Path, text_column: str) -> list[tuple[str, str]]:
    """(label, text) rows of a GLUE TSV as published: a header, tab-separated, no quoting, CRLF or LF."""
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        label, text = header.index("label"), header.index(text_column)
        return [(row[label], row[text].strip()) for row in reader if len(row) > max(label, text) and row[text].strip()]


def bucket(depth: int, sentence_tokens: int, window: int) -> str:
    """Where the labelled sentence lies: `first` (all of it within the first window's `window` content tokens),
    `beyond` (it starts after the first LONG - 2 content tokens: truncation at 512 sees none of it), `between`."""
    if depth + sentence_tokens <= window:
        return "first"
    return "beyond" if depth >= LONG - 2 else "between"


def strata(max_depth: int, sentence_tokens: int, window: int) -> list[tuple[str, int, int]]:
    """The depth ranges [low, high] of each bucket that `max_depth` allows."""
    ranges = [("first", 0, window - sentence_tokens), ("between", window - sentence_tokens + 1, LONG - 3),
              ("beyond", LONG - 2, max_depth)]
    return [(name, low, min(high, max_depth)) for name, low, high in ranges if low <= min(high, max_depth)]


def build_document(sentence: str, tokens: int, max_depth: int, sampling: str, window: int, rng: random.Random,
                   filler: list[str], filler_tokens: list[int], tail: int | None = None,
                   stratum: str | None = None, end: int | None = None) -> tuple[str, int, int, int]:
    """Filler sentences with `sentence` (of `tokens` tokens) after `depth` tokens of them; the filler goes on to
    about `max_depth` tokens in all (with `tail`: for a random 0..`tail` tokens after the sentence; with `end`: until
    the filler holds `end` tokens). `stratum` names the bucket whose depth range to draw from (default: one at
    random, or any depth with uniform sampling). Returns the text, where the sentence starts in it (characters),
    the depth as the sum of the filler sentences' token counts, and the filler's tokens in all."""
    ranges = strata(max_depth, tokens, window) or [("any", 0, max_depth)]
    if stratum is not None:
        name, low, high = next(found for found in ranges if found[0] == stratum)
    else:
        name, low, high = rng.choice(ranges) if sampling == "stratified" else ("any", 0, max_depth)
    for _ in range(100):  # the depth falls on a sentence boundary at or below the target: draw until it fits
        target, before, depth = rng.randint(low, high), [], 0
        while True:
            j = rng.randrange(len(filler))
            if depth + filler_tokens[j] > target:
                break
            before.append(filler[j])
            depth += filler_tokens[j]
        if name == "any" or bucket(depth, tokens, window) == name:
            break
    after, total = [], depth
    if end is None:
        end = max_depth if tail is None else depth + tokens + rng.randint(0, tail)
    while total < end:
        j = rng.randrange(len(filler))
        after.append(filler[j])
        total += filler_tokens[j]
    prefix = " ".join(before) + (" " if before else "")
    return prefix + " ".join([sentence, *after]), len(prefix), depth, total


def write_tsv(path: Path, rows: list[tuple[tuple[str, str], str, int, int]], dev: bool) -> None:
    """(label, text) rows, and with `dev` each document's depth and sentence tokens, as a headed TSV."""
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        writer.writerow(["label", "text", "depth", "sentence_tokens"] if dev else ["label", "text"])
        for (label, _), text, depth, n in rows:
            writer.writerow([label, text, depth, n] if dev else [label, text])


def build_task(args: argparse.Namespace, tokenizer, work: Path) -> dict[str, Any]:
    """Write train.tsv (label, text) and dev.tsv (label, text, depth, sentence_tokens) into `work`; return
    the dev documents, the filler corpus' figures and the files' digest."""
    filler, filler_tokens = filler_corpus(tokenizer, args.seed)
    window = WINDOW - tokenizer.num_special_tokens_to_add()
    train_rows = read_sst2(args.data_dir / "sst2" / "train.tsv", "sentence")
    dev_rows = read_sst2(args.data_dir / "sst2" / "dev.tsv", "content")
    rng = random.Random(args.seed)
    # SST-2's train set holds its sentences' sub-phrases too ("the greatest musicians"); dev holds whole sentences.
    counts = [len(ids) for ids in tokenizer([t for _, t in train_rows], add_special_tokens=False)["input_ids"]]
    train_rows = [row for row, n in zip(train_rows, counts) if n >= args.min_sentence_tokens]
    candidates, train_rows = train_rows, rng.sample(train_rows, min(args.train_docs, len(train_rows)))
    dev_rows = dev_rows if args.dev_docs >= len(dev_rows) else rng.sample(dev_rows, args.dev_docs)
    work.mkdir(parents=True, exist_ok=True)
    task: dict[str, Any] = {"filler_sentences": len(filler), "filler_tokens": statistics.median(filler_tokens),
                            "filler_range": (min(filler_tokens), max(filler_tokens))}
    longest = 0
    for split, rows in (("train", train_rows), ("dev", dev_rows)):
        sentence_tokens = [len(ids) for ids in tokenizer([t for _, t in rows], add_special_tokens=False)["input_ids"]]
        split_rng = random.Random(f"{args.seed}-{split}")
        if split == "dev" and args.paired:  # each sentence once in every bucket (those that fit all three)
            kept = [(row, n) for row, n in zip(rows, sentence_tokens)
                    if len(strata(args.max_depth, n, window)) == len(BUCKETS)]
            rows = [row for row, _ in kept for _ in BUCKETS]
            sentence_tokens = [n for _, n in kept for _ in BUCKETS]
            documents = []
            for (_, text), n in kept:  # the deepest first: the others are filled to its length
                deepest = build_document(text, n, args.max_depth, args.depth_sampling, window, split_rng, filler,
                                         filler_tokens, args.tail, stratum=BUCKETS[-1])
                documents += [build_document(text, n, args.max_depth, args.depth_sampling, window, split_rng, filler,
                                             filler_tokens, stratum=name, end=deepest[3]) for name in BUCKETS[:-1]]
                documents.append(deepest)
        else:
            documents = [build_document(text, n, args.max_depth, args.depth_sampling, window, split_rng, filler,
                                        filler_tokens, args.tail) for (_, text), n in zip(rows, sentence_tokens)]
        texts = [text for text, *_ in documents]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        # the depth as the tokenizer counts it: the tokens of the text before the sentence
        depths = [len(ids) for ids in tokenizer([text[:start] for text, start, *_ in documents],
                                                add_special_tokens=False)["input_ids"]]
        task[f"{split}_depth_mismatches"] = sum(depth != summed for depth, (_, _, summed, _) in zip(depths, documents))
        longest = max(longest, *lengths)
        written = list(zip(rows, texts, depths, sentence_tokens))
        if split == "dev" and args.paired:  # all three documents of each sentence are measured (dev-paired.tsv);
            write_tsv(work / "dev-paired.tsv", written, dev=True)  # validation, one each, buckets in turn
            written = [row for i, row in enumerate(written) if i % len(BUCKETS) == (i // len(BUCKETS)) % len(BUCKETS)]
        write_tsv(work / f"{split}.tsv", written, dev=split == "dev")
        task[split] = {"documents": len(rows), "tokens": (min(lengths), statistics.median(lengths), max(lengths))}
        if split == "dev":
            task["dev_texts"], task["dev_labels"] = texts, [label for label, _ in rows]
            task["dev_buckets"] = [bucket(d, n, window) for d, n in zip(depths, sentence_tokens)]
            task["depth_range"] = (min(depths), max(depths))
    # a document of about COST_TOKENS tokens: the first dev sentence halfway through the filler
    cost_rng = random.Random(f"{args.seed}-cost")
    sentence = dev_rows[0][1]
    n = len(tokenizer(sentence, add_special_tokens=False)["input_ids"])
    before, after = COST_TOKENS // 2, COST_TOKENS - COST_TOKENS // 2 - n
    pieces = {"before": [], "after": []}
    for part, budget in (("before", before), ("after", after)):
        used = 0
        while used < budget:
            j = cost_rng.randrange(len(filler))
            pieces[part].append(filler[j])
            used += filler_tokens[j]
    task["cost_text"] = " ".join([*pieces["before"], sentence, *pieces["after"]])
    task["cost_tokens"] = len(tokenizer(task["cost_text"], add_special_tokens=False)["input_ids"])
    task["window"] = window
    if args.warm_start:  # sentences alone, none of them in a document
        used = set(train_rows)
        rest = [row for row in candidates if row not in used]
        warm = random.Random(f"{args.seed}-warm").sample(rest, min(args.warm_start, len(rest)))
        with (work / "warm.tsv").open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
            writer.writerow(["label", "text"])
            writer.writerows(warm)
        task["warm_rows"] = len(warm)
    # windows for the longest document: 1 + ceil((n - w) / (w - stride)), w the window's content tokens
    task["max_chunks"] = 1 + max(0, math.ceil((longest - window) / (window - args.stride)))
    digest = hashlib.sha256()
    for split in ("train", "dev", *(["dev-paired"] if args.paired else []), *(["warm"] if args.warm_start else [])):
        digest.update((work / f"{split}.tsv").read_bytes())
    task["digest"] = digest.hexdigest()[:16]
    return task


# ---- training runs ----------------------------------------------------------------------------------

def planned_runs(args: argparse.Namespace, work: Path, task: dict[str, Any],
                 encoder: Path | None = None) -> list[dict[str, Any]]:
    budget = [*([f"encoder.name_or_path={encoder}"] if encoder else []), "data=files", f"data.train_path={work / 'train.tsv'}", f"data.val_path={work / 'dev.tsv'}",
              "data.text_column=text", "data.label_column=label", f"trainer.max_epochs={args.epochs}",
              f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"seed={args.seed}",
              "trainer.enable_progress_bar=false", "callbacks.progress.mode=lines",
              f"callbacks.progress.every_n_steps={args.log_every}"]
    chunk = ["data.long_text=chunk", f"data.chunk_stride={args.stride}", f"data.max_chunks={task['max_chunks']}",
             *([f"data.max_chunks_per_batch={args.max_chunks_per_batch}"] if args.max_chunks_per_batch else [])]
    planned = []
    for name in args.runs:
        kind, length, *aggregation = name.split("-")
        overrides = [*budget, f"data.max_length={length}"]
        if kind == "chunk":
            overrides += [*chunk, f"model.chunk_aggregation={aggregation[0]}"]
        directory = args.runs_dir / name
        overrides += [f"hydra.run.dir={directory}", f"paths.cache_dir={directory / 'cache'}"]
        planned.append({"name": name, "dir": directory, "overrides": overrides, "max_length": int(length),
                        "chunked": kind == "chunk"})
    return planned


def train(run: dict[str, Any], threads: int, reuse: bool, digest: str) -> dict[str, Any]:
    """Train `run` in a fresh process (or reuse its finished run directory); its metrics.json and figures."""
    record = run["dir"] / "benchmark.json"  # what this script ran there: overrides, data digest, times
    if reuse and (run["dir"] / "metrics.json").is_file() and record.is_file():
        earlier = json.loads(record.read_text())
        if earlier.get("overrides") == run["overrides"] and earlier.get("data") == digest:
            print(f"{run['name']}: reusing {run['dir']}", flush=True)
            return {**earlier, "metrics": json.loads((run["dir"] / "metrics.json").read_text()), "reused": True}
        print(f"{run['name']}: {run['dir']} was trained with other overrides or data; training again", flush=True)
    if run["dir"].exists():
        shutil.rmtree(run["dir"])  # a leftover best.ckpt would make Lightning write best-v1.ckpt beside it
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{run['name']}: training in {run['dir']}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "train.py", *run["overrides"]], cwd=REPO, env=environment,
                               stdout=subprocess.DEVNULL)
    peak_kib = peak_rss_kib(process)
    wall = time.perf_counter() - started
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, "train.py")
    done = {"overrides": run["overrides"], "data": digest, "wall_s": wall, "peak_rss_gib": peak_kib / 2**20,
            **train_log(run["dir"] / "train.log")}
    record.write_text(json.dumps(done, indent=2) + "\n")
    return {**done, "metrics": json.loads((run["dir"] / "metrics.json").read_text()), "reused": False}


PROGRESS = re.compile(r"step (\d+)/\d+.*\| ([\d.]+) samples/s (\d+) tokens/s")


def train_log(path: Path) -> dict[str, Any]:
    """From train.log: the median samples/s and tokens/s over the progress lines (the first line, which times
    the first step alone, left out when there are others), how many lines, and the fit time."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    lines = [(int(step), float(samples), float(tokens)) for step, samples, tokens in PROGRESS.findall(text)]
    used = lines[1:] if len(lines) > 1 else lines
    found = re.findall(r"training done: \d+ optimizer steps in (?:(\d+)h(\d+)m|(\d+)m(\d+)s)", text)
    fit = None
    if found:
        hours, minutes, short_minutes, seconds = (int(part or 0) for part in found[-1])
        fit = 3600 * hours + 60 * (minutes + short_minutes) + seconds
    return {"samples_s": statistics.median(s for _, s, _ in used) if used else None,
            "tokens_s": statistics.median(t for _, _, t in used) if used else None,
            "progress_lines": len(used), "fit_s": fit}


def speed_rounds(args: argparse.Namespace, task: dict[str, Any], info: dict[str, str], load: float) -> None:
    """--speed-rounds: short runs of every run in --runs, taking turns, round after round; writes SPEED_TITLE."""
    planned = planned_runs(args, args.runs_dir / "data", task)
    base = "truncate-128"
    figures: dict[str, list[dict[str, Any]]] = {run["name"]: [] for run in planned}
    for number in range(args.speed_rounds):
        order = planned if number % 2 == 0 else planned[::-1]
        for run in order:
            directory = args.runs_dir / "speed" / f"{run['name']}-{number}"
            short = {**run, "dir": directory, "overrides": [
                *(o for o in run["overrides"] if not o.startswith(("hydra.run.dir=", "paths.cache_dir=",
                                                                     "callbacks.progress.every_n_steps="))),
                f"trainer.max_steps={args.speed_steps}", "trainer.limit_val_batches=2",
                "trainer.num_sanity_val_steps=0", f"callbacks.progress.every_n_steps={args.speed_log_every}",
                f"hydra.run.dir={directory}", f"paths.cache_dir={directory / 'cache'}"]}
            done = train(short, args.threads, False, task["digest"])
            figures[run["name"]].append(done)
            print(f"round {number} {run['name']}: {done['tokens_s']:.0f} tokens/s over {done['progress_lines']} "
                  "progress lines", flush=True)
        write_section(SPEED_TITLE, speed_section(args, figures, base, info, load), args.docs)


def speed_section(args: argparse.Namespace, figures: dict[str, list[dict[str, Any]]], base: str,
                  info: dict[str, str], load: float) -> str:
    rounds = max(map(len, figures.values()))
    rows, parts, oks = [], [], []
    for name, done in figures.items():
        ratios = [run["tokens_s"] / mine["tokens_s"] for run, mine in zip(done, figures.get(base, []))
                  if run.get("tokens_s") and mine.get("tokens_s")]
        cells = [f"{run['tokens_s']:.0f}" if run.get("tokens_s") else "—" for run in done]
        cells += ["—"] * (rounds - len(cells))
        middle = statistics.median(ratios) if ratios and name != base else None
        rows.append(f"| {name} | " + " | ".join(cells) + " | "
                    + (f"{statistics.median(r['tokens_s'] for r in done if r.get('tokens_s')):.0f}" if done else "—")
                    + " | " + (" / ".join(f"{r:.2f}" for r in ratios) if name != base else "—")
                    + f" | {'—' if middle is None else f'{middle:.2f}x'} |")
        if name.startswith("chunk-") and middle is not None:
            oks.append(middle >= TOKENS_RATIO)
            parts.append(f"{name} {middle:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    chunked = [name for name in figures if name.startswith("chunk-")]
    verdict_text = (verdict(all(oks)) if oks and len(oks) == len(chunked) and base in figures else verdict(None))
    return "\n".join([
        f"Written by `benchmarks/long_docs.py --speed-rounds` on {time.strftime('%Y-%m-%d %H:%M')}, after "
        f"{rounds} round(s); wall-clock.",
        "",
        f"- Command: `{command(args)}`",
        f"- Machine: {info['cpu']}; OMP_NUM_THREADS={args.threads}; 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} when this was written",
        f"- Versions: {info['versions']}",
        f"- Each round: every run below once, a fresh `python train.py data=files ...` process on the training "
        f"documents of the section above (same flags: --tail {args.tail}, {args.train_docs:,} documents), from "
        f"the bundled MiniLM-L6 (weights do not change the speed), `trainer.max_steps={args.speed_steps}`, "
        f"batch {args.batch_size} documents"
        + (f", `data.max_chunks_per_batch={args.max_chunks_per_batch}`" if args.max_chunks_per_batch else "")
        + f"; {base} first in even rounds and last in odd ones. Tokens/s: non-padding tokens of the windows "
        "the encoder read (stride overlap and special tokens included), the median of train.log's progress "
        f"lines (one every {args.speed_log_every} steps or 30 s, the first left out), validation not included.",
        "",
        "| run | " + " | ".join(f"round {n} tokens/s" for n in range(rounds)) + " | median tokens/s | "
        f"/ {base} in the same round | median ratio |",
        "|---|" + "--:|" * rounds + "--:|--:|--:|",
        *rows,
        "",
        f"- Chunked training tokens/s >= {TOKENS_RATIO:g}x that of {base}, the median over the rounds of the "
        f"ratio within a round: {verdict_text}" + (f" ({'; '.join(parts)})" if parts else ""),
    ])


def warm_start(args: argparse.Namespace, work: Path, task: dict[str, Any]) -> Path:
    """--warm-start N: fine-tune the bundled MiniLM on N short SST-2 sentences (none of them in a document; one
    epoch, the runs' batch size and lr, a tenth held out to pick the checkpoint), and save its encoder, which
    every run then starts from: a model that already reads sentiment, so the runs' budget goes to finding the
    sentence in a document. Reused when its directory holds an encoder trained on the same data."""
    directory = args.runs_dir / "warm-start"
    encoder = directory / "encoder"
    record = directory / "warm-start.json"
    if (encoder / "config.json").is_file() and record.is_file() and json.loads(record.read_text())["data"] == task["digest"]:
        task["warm_accuracy"] = json.loads(record.read_text())["accuracy"]
        print(f"warm start: reusing {encoder}", flush=True)
        return encoder
    run = {"name": "warm-start", "dir": directory, "overrides": [
        "data=files", f"data.train_path={work / 'warm.tsv'}", "data.val_fraction=0.1", "data.text_column=text",
        "data.label_column=label", "data.max_length=128", "trainer.max_epochs=1", f"data.batch_size={args.batch_size}",
        f"optim.lr={args.lr}", f"seed={args.seed}", "trainer.enable_progress_bar=false", "callbacks.progress.mode=lines",
        f"hydra.run.dir={directory}", f"paths.cache_dir={directory / 'cache'}"]}
    done = train(run, args.threads, False, task["digest"])
    from headfit import ClassifierModule

    module = ClassifierModule.load_from_checkpoint(done["metrics"]["best_checkpoint"], map_location="cpu")
    module.encoder.save_pretrained(encoder)
    module.tokenizer.save_pretrained(encoder)  # the checkpoint carries the tokenizer it was trained with
    task["warm_accuracy"] = done["metrics"]["val"]["val/accuracy"]
    record.write_text(json.dumps({"data": task["digest"], "accuracy": task["warm_accuracy"]}) + "\n")
    print(f"warm start: {task['warm_rows']} sentences, val accuracy {task['warm_accuracy']:.3f}; encoder in {encoder}",
          flush=True)
    return encoder


# ---- measurements from the best checkpoint ----------------------------------------------------------

def timed(functions: dict[str, Any], repeats: int, synchronize) -> dict[str, float]:
    """{name: the median wall time of `repeats` calls of the function, in seconds}, the functions taking turns
    (one call of each per round), so that a busy spell of the machine slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            synchronize()
            started = time.perf_counter()
            function()
            synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(done: dict[str, Any], task: dict[str, Any], args: argparse.Namespace) -> None:
    """Into `done`: dev accuracy overall and per bucket from the best checkpoint's predictions, their time, and
    the prediction cost of the COST_TOKENS-token document."""
    import torch

    from headfit.data.tokenize import encode_chunks
    from headfit.predict import Predictor

    predictor = Predictor.from_checkpoint(done["metrics"]["best_checkpoint"], batch_size=args.batch_size)
    module, tokenizer = predictor.module, predictor.tokenizer
    done["device"] = str(module.device)
    cuda = module.device.type == "cuda"
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    texts, labels, buckets = task["dev_texts"], task["dev_labels"], task["dev_buckets"]
    predictor.predict(texts[:args.batch_size], progress=False)  # warm-up
    started = time.perf_counter()
    results = predictor.predict(texts, progress=False)
    done["predict_docs_s"] = len(texts) / (time.perf_counter() - started)
    right = [str(result["label"]) == str(label) for result, label in zip(results, labels)]
    done["right"] = right  # per document, for the paired difference (--paired)
    done["accuracy"] = {"all": (100 * sum(right) / len(right), len(right))}
    for name in BUCKETS:
        mine = [ok for ok, where in zip(right, buckets) if where == name]
        done["accuracy"][name] = (100 * sum(mine) / len(mine), len(mine)) if mine else (None, 0)

    # the cost of one long document: Predictor.predict against its windows' forward passes
    document, chunking = task["cost_text"], getattr(module, "chunking", None)
    if chunking:
        windows = encode_chunks(tokenizer, [document], predictor.max_length, chunking["chunk_stride"],
                                chunking["max_chunks"])
        rows = [{key: windows[key][0][w] for key in ("input_ids", "token_type_ids") if key in windows}
                for w in range(windows["chunks"][0])]
    else:
        encoded = tokenizer(document, truncation=True, max_length=predictor.max_length)
        rows = [{key: encoded[key] for key in ("input_ids", "token_type_ids") if key in encoded}]
    alone = [{key: value.to(module.device) for key, value in predictor.collate([row]).items()} for row in rows]
    together = {key: value.to(module.device) for key, value in predictor.collate(rows).items()}
    @torch.inference_mode()
    def each_alone() -> None:
        for batch in alone:
            module.logits(**batch)

    @torch.inference_mode()
    def as_one_batch() -> None:
        module.logits(**together)

    functions = {"predict": lambda: predictor.predict([document], progress=False), "alone": each_alone,
                 "batched": as_one_batch}
    timed(functions, 1, synchronize)  # warm-up
    seconds = timed(functions, args.cost_repeats, synchronize)
    done["cost"] = {"windows": len(rows), "tokens": sum(len(row["input_ids"]) for row in rows),
                    **{f"{name}_ms": 1000 * value for name, value in seconds.items()}}


# ---- the section ------------------------------------------------------------------------------------

def cell(value: float | None, form: str = ".1f") -> str:
    return "—" if value is None else format(value, form)


def verdict(ok: bool | None) -> str:
    return "not measured yet" if ok is None else ("met" if ok else "**not met**")


def standard_error(accuracy: tuple[float | None, int]) -> float | None:
    value, n = accuracy
    return None if value is None or not n else 100 * math.sqrt(value / 100 * (1 - value / 100) / n)


def section(args: argparse.Namespace, task: dict[str, Any], done: dict[str, dict[str, Any]], info: dict[str, str],
            load: float) -> str:
    counts = {name: task["dev_buckets"].count(name) for name in BUCKETS}
    majority = {}
    for name in BUCKETS:
        mine = [label for label, where in zip(task["dev_labels"], task["dev_buckets"]) if where == name]
        majority[name] = 100 * max(mine.count(label) for label in set(mine)) / len(mine) if mine else None
    accuracy_rows, cost_rows = [], []
    for name in args.runs:
        run = done.get(name, {})
        accuracy = run.get("accuracy", {})
        state = "failed: " + run["failed"] if "failed" in run else ("reused" if run.get("reused") else "")
        val = (run.get("metrics") or {}).get("val", {}).get("val/accuracy")
        accuracy_rows.append(
            f"| {name} | {cell(accuracy.get('all', (None,))[0])} | "
            + " | ".join(cell(accuracy.get(b, (None,))[0]) for b in BUCKETS)
            + f" | {cell(None if val is None else 100 * val)} | {cell(run.get('samples_s'))} | "
            f"{cell(run.get('tokens_s'), '.0f')} | {run.get('progress_lines', '—')} | "
            f"{cell(minutes(run.get('fit_s')))} | {cell(minutes(run.get('wall_s')))} | "
            f"{cell(run.get('peak_rss_gib'))} | {cell(run.get('predict_docs_s'))} | {state} |")
        cost = run.get("cost")
        if cost:
            cost_rows.append(f"| {name} | {cost['windows']} | {cost['tokens']} | {cost['predict_ms']:.0f} | "
                             f"{cost['alone_ms']:.0f} | {cost['batched_ms']:.0f} | "
                             f"{cost['predict_ms'] / cost['alone_ms']:.2f}x | "
                             f"{cost['predict_ms'] / cost['batched_ms']:.2f}x |")

    chunked = [name for name in args.runs if name.startswith("chunk-")]
    base = done.get("truncate-128", {}).get("tokens_s")
    gap_parts, speed_parts, cost_parts, gaps_ok, speeds_ok, costs_ok = [], [], [], [], [], []
    for name in chunked:
        run = done.get(name, {})
        accuracy = run.get("accuracy", {})
        first, beyond = accuracy.get("first", (None, 0)), accuracy.get("beyond", (None, 0))
        if args.paired and run.get("right"):  # the same sentences in both buckets: their paired difference
            right, buckets = run["right"], task["dev_buckets"]
            width = len(BUCKETS)  # a sentence's documents lie together, in BUCKETS' order
            differences = [100 * (int(right[i + width - 1]) - int(right[i])) for i in range(0, len(right), width)
                           if tuple(buckets[i:i + width]) == BUCKETS]
            gap = statistics.mean(differences)
            noise = 1.96 * statistics.stdev(differences) / math.sqrt(len(differences))
            gaps_ok.append(abs(gap) <= ACCURACY_GAP)
            gap_parts.append(f"{name} {gap:+.1f} (±{noise:.1f} at 95%, paired over {len(differences)} sentences; "
                             f"{sum(d != 0 for d in differences)} right in one bucket only)")
        elif first[0] is not None and beyond[0] is not None:
            gap = beyond[0] - first[0]
            noise = 1.96 * math.hypot(standard_error(first), standard_error(beyond))
            gaps_ok.append(abs(gap) <= ACCURACY_GAP)
            gap_parts.append(f"{name} {gap:+.1f} (±{noise:.1f} at 95%)")
        if base and run.get("tokens_s"):
            speeds_ok.append(run["tokens_s"] >= TOKENS_RATIO * base)
            speed_parts.append(f"{name} {run['tokens_s'] / base:.2f}x")
        if run.get("cost"):
            ratio = run["cost"]["predict_ms"] / run["cost"]["alone_ms"]
            costs_ok.append(ratio <= COST_RATIO)
            cost_parts.append(f"{name} {ratio:.2f}x (against one batched pass of the same windows "
                              f"{run['cost']['predict_ms'] / run['cost']['batched_ms']:.2f}x)")

    def judged(oks: list[bool], parts: list[str]) -> str:
        complete = oks and len(oks) == len(chunked)
        return (verdict(all(oks)) if complete else verdict(None)) + (f" ({'; '.join(parts)})" if parts else "")

    truncated = [name for name in args.runs if name.startswith("truncate-")]
    chance = "; ".join(f"{name} {cell(done.get(name, {}).get('accuracy', {}).get('beyond', (None,))[0])}"
                       for name in truncated)
    verdicts = [
        f"- Chunked accuracy on documents whose sentence lies beyond {LONG} tokens within {ACCURACY_GAP:g} points "
        "of its accuracy when the sentence is in the first window (beyond - first, with the 95% interval of that "
        + ("difference over the sentences, each in both buckets): " if args.paired else
           "difference from the two buckets' sizes): ") + judged(gaps_ok, gap_parts),
        f"- Truncation beyond {LONG} tokens (it sees none of the sentence there; the bucket's majority label is "
        f"{cell(majority['beyond'])}% of it): {chance or 'no truncation run'}",
        f"- Chunked training tokens/s >= {TOKENS_RATIO:g}x that of truncate-128 "
        f"({cell(base, '.0f')} tokens/s): " + judged(speeds_ok, speed_parts),
        f"- Prediction of a {task['cost_tokens']:,}-token document <= {COST_RATIO:g}x the sum of its windows' "
        "forward passes (each window alone): " + judged(costs_ok, cost_parts),
    ]
    devices = sorted({run["device"] for run in done.values() if "device" in run})
    sampling = ("stratified: a third of the documents drawn in each bucket's depth range (those --max-depth "
                "allows), the depth uniform within it" if args.depth_sampling == "stratified"
                else f"uniform over 0..{args.max_depth}")
    return "\n".join([
        f"Written by `benchmarks/long_docs.py` on {time.strftime('%Y-%m-%d %H:%M')}; **one run each** (one seed, "
        "one training run per configuration), wall-clock.",
        "",
        f"- Command: `{command(args)}`",
        f"- Machine: {info['cpu']}; OMP_NUM_THREADS={args.threads}; prediction on {', '.join(devices) or '?'}; "
        f"1-minute load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} when this was written "
        "(timings are wall-clock: other processes on the machine slow runs unevenly)",
        f"- Versions: {info['versions']}",
        f"- Task: each document is filler, {task['filler_sentences']:,} bland factual sentences generated from "
        f"word lists (seed {args.seed}; {task['filler_range'][0]}-{task['filler_range'][1]} tokens each, median "
        f"{task['filler_tokens']:g}), with one SST-2 sentence at a depth of 0..{args.max_depth} tokens "
        f"({sampling}); the label is the sentence's; "
        + ("the filler runs on to about the deepest depth. " if args.tail is None else
           f"the filler runs on for 0..{args.tail} tokens after the sentence (uniform), so a document ends soon "
           "after its sentence. ")
        + "Depths and lengths are counted with the bundled MiniLM "
        f"tokenizer (no special tokens). Train: {task['train']['documents']:,} documents from SST-2 train "
        f"sentences of >= {args.min_sentence_tokens} tokens (its shorter rows are sub-phrases); dev: "
        + (f"{task['dev']['documents']:,} documents, each of {task['dev']['documents'] // len(BUCKETS):,} SST-2 dev "
           "sentences placed once in every bucket, its three documents of one length, the deepest one's (`--paired`: "
           "accuracy by bucket compares the same sentences and lengths, only the depth differs; validation during "
           "training reads one document of each sentence, the buckets in turn)"
           if args.paired else f"{task['dev']['documents']:,} documents from SST-2 dev")
        + ". Document tokens min / median / max: train "
        f"{'/'.join(f'{v:g}' for v in task['train']['tokens'])}, "
        f"dev {'/'.join(f'{v:g}' for v in task['dev']['tokens'])}.",
        f"- Buckets, by where the labelled sentence lies: **first** all of it within the first {WINDOW}-token "
        f"window ({task['window']} tokens after [CLS]; {counts['first']} dev documents), **beyond** it starts "
        f"after the first {LONG - 2} tokens, so truncation at {LONG} sees none of it ({counts['beyond']}), "
        f"**between** the rest ({counts['between']}).",
        "- Budget, the same for every run: the bundled MiniLM-L6"
        + (f" after a warm start (`--warm-start {args.warm_start}`: fine-tuned for one epoch on "
           f"{task.get('warm_rows', args.warm_start):,} SST-2 train sentences alone, none of them in a document, a "
           "tenth held out to pick the checkpoint"
           + (f", {100 * task['warm_accuracy']:.1f}% accuracy there" if "warm_accuracy" in task else "")
           + "; every run starts from that encoder)" if args.warm_start else "")
        + f", {args.epochs} epoch(s), batch {args.batch_size} "
        f"documents, lr {args.lr:g}, seed {args.seed}; each run a fresh `python train.py data=files ...` process "
        "with its own run directory and a cold token cache, checkpoint by `val/macro_f1` on the dev documents "
        "(one validation per epoch). Chunked runs: `data.long_text=chunk data.max_length=128 "
        f"data.chunk_stride={args.stride} data.max_chunks={task['max_chunks']}` (enough windows for the longest "
        "document: none is capped), "
        + (f"`data.max_chunks_per_batch={args.max_chunks_per_batch}`, " if args.max_chunks_per_batch else
           f"no `data.max_chunks_per_batch` (a batch is {args.batch_size} documents with all their windows), ")
        + "and `model.chunk_aggregation` as named.",
        "- Accuracy: percent of the dev documents, from the best checkpoint's `Predictor.predict(dev texts)`; "
        "`val/accuracy` from metrics.json as a check. Training samples/s (documents) and tokens/s (non-padding "
        "tokens of the windows the encoder read, stride overlap and special tokens included): the **median of the "
        f"values train.log's progress lines give** (a line every {args.log_every} optimizer steps or 30 s; the "
        "first, which times the first step alone, left out), validation not included. Fit: train.log's \"training "
        "done\" time, validation included; job: the whole `train.py` process. Peak RSS: the training process's. "
        "Predict docs/s: one pass over the dev documents after a one-batch warm-up.",
        "",
        "| run | dev accuracy | first window | between | beyond 512 | val/accuracy | train samples/s | "
        "train tokens/s | progress lines | fit (min) | job (min) | peak RSS (GiB) | predict docs/s | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        *accuracy_rows,
        "",
        f"Prediction cost of one {task['cost_tokens']:,}-token document (the first dev sentence halfway through "
        f"filler), median of {args.cost_repeats} timed calls after a warm-up, the three taking turns: "
        "`Predictor.predict([doc])` (tokenising, "
        "windowing, batching, the forward pass, aggregation and decoding) against the windows the model reads "
        "(the same `encode_chunks` windows; truncation: its one window) passed to `module.logits` each alone "
        "(summed) and all together as one padded batch, under `torch.inference_mode()`.",
        "",
        "| run | windows | tokens | predict (ms) | windows alone, summed (ms) | windows as one batch (ms) | "
        "predict / alone | predict / batch |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
        *(cost_rows or ["| not measured yet | | | | | | | |"]),
        "",
        *verdicts,
    ])


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


def command(args: argparse.Namespace) -> str:
    defaults = parse_args([])
    flags = []
    for key, value in vars(args).items():
        if key in ("data_dir", "runs_dir", "reuse", "docs") or value == getattr(defaults, key):
            continue
        flag = f"--{key.replace('_', '-')}"
        flags.append(flag if value is True else f"{flag} {','.join(value) if isinstance(value, list) else value}")
    return " ".join(["python benchmarks/long_docs.py", *flags])


def run_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in RUNS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown run(s) {', '.join(unknown) or '(none)'}; choose from "
                                         f"{', '.join(RUNS)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="the folder holding sst2/ (default: ../shared/datasets)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "outputs" / "benchmark-long-docs",
                        help="the runs' directories and the documents' TSVs (data/); a run's directory is emptied "
                             "before it trains")
    parser.add_argument("--docs", type=Path, default=BENCHMARKS_MD,
                        help="the Markdown file whose section this writes (default: docs/benchmarks.md)")
    parser.add_argument("--train-docs", type=int, default=2000, help="training documents (SST-2 train sentences)")
    parser.add_argument("--dev-docs", type=int, default=872, help="dev documents (default: all 872 of SST-2 dev)")
    parser.add_argument("--max-depth", type=int, default=2000,
                        help="the deepest the labelled sentence lies, in tokens; documents are about this long")
    parser.add_argument("--tail", type=int, default=None,
                        help="filler after the sentence: a random 0..TAIL tokens (default: on to --max-depth); "
                             "shorter documents, the same depths, a third of the windows to train on")
    parser.add_argument("--warm-start", type=int, default=0, metavar="N",
                        help="first fine-tune the encoder on N SST-2 sentences alone (none in a document) and start "
                             "every run from it (default: 0, the bundled MiniLM)")
    parser.add_argument("--paired", action="store_true",
                        help="dev: each of --dev-docs sentences in three documents of one length, one per bucket, so "
                             "the buckets' accuracies compare the same sentences and lengths, only the depth differs "
                             "(their difference is paired)")
    parser.add_argument("--depth-sampling", choices=("stratified", "uniform"), default="stratified",
                        help="stratified: a third of the documents in each bucket's depth range; uniform: 0..max")
    parser.add_argument("--min-sentence-tokens", type=int, default=8,
                        help="the shortest SST-2 train sentence used, in tokens (shorter rows are sub-phrases)")
    parser.add_argument("--epochs", type=int, default=1, help="trainer.max_epochs of every run")
    parser.add_argument("--batch-size", type=int, default=16,
                        help="data.batch_size (documents) of every run, and of prediction")
    parser.add_argument("--lr", type=float, default=5e-5, help="optim.lr of every run")
    parser.add_argument("--stride", type=int, default=32, help="data.chunk_stride of the chunked runs")
    parser.add_argument("--max-chunks-per-batch", type=int, default=None,
                        help="data.max_chunks_per_batch of the chunked runs (default: none)")
    parser.add_argument("--runs", type=run_names, default=list(RUNS), help=f"which runs (default: {','.join(RUNS)})")
    parser.add_argument("--seed", type=int, default=42, help="the documents' and the runs' seed")
    parser.add_argument("--log-every", type=int, default=10,
                        help="callbacks.progress.every_n_steps: a progress line (a throughput value) every N steps")
    parser.add_argument("--cost-repeats", type=int, default=7, help="timed calls per prediction-cost figure")
    parser.add_argument("--speed-rounds", type=int, default=0, metavar="R",
                        help="measure training tokens/s alone: R rounds of short runs taking turns (see above)")
    parser.add_argument("--speed-steps", type=int, default=60, help="--speed-rounds: optimizer steps of each run")
    parser.add_argument("--speed-log-every", type=int, default=5,
                        help="--speed-rounds: callbacks.progress.every_n_steps of each run")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the runs, torch threads here")
    parser.add_argument("--reuse", action="store_true",
                        help="skip a run whose directory holds metrics.json from the same overrides and data")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    load = os.getloadavg()[0]
    args.data_dir, args.runs_dir, args.docs = args.data_dir.resolve(), args.runs_dir.resolve(), args.docs.resolve()
    sst2 = args.data_dir / "sst2"
    if not ((sst2 / "train.tsv").is_file() and (sst2 / "dev.tsv").is_file()):
        print(f"skipped: {sst2}/train.tsv and dev.tsv not found (see ../shared/datasets/README.md)")
        return
    import torch
    from omegaconf import OmegaConf

    from headfit.encoder import load_tokenizer

    torch.set_num_threads(args.threads)
    # the bundled tokenizer, as the default encoder config names it (`${bundled_minilm:}`, registered by headfit)
    encoder = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "encoder" / "minilm.yaml"), resolve=True)
    tokenizer = load_tokenizer(encoder["name_or_path"])
    started = time.perf_counter()
    task = build_task(args, tokenizer, args.runs_dir / "data")
    print(f"documents: train {task['train']}, dev {task['dev']}, dev buckets "
          f"{ {name: task['dev_buckets'].count(name) for name in BUCKETS} }, max_chunks {task['max_chunks']}, "
          f"cost document {task['cost_tokens']} tokens; depths that differ from the filler's summed token counts: "
          f"train {task['train_depth_mismatches']}, dev {task['dev_depth_mismatches']}; written in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    if args.speed_rounds:
        if "truncate-128" not in args.runs:
            sys.exit("--speed-rounds compares with truncate-128: name it in --runs")
        speed_rounds(args, task, machine(), load)
        print(f"all rounds done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        return
    encoder = warm_start(args, args.runs_dir / "data", task) if args.warm_start else None
    info, done, failed = machine(), {}, []
    for run in planned_runs(args, args.runs_dir / "data", task, encoder):
        try:
            done[run["name"]] = train(run, args.threads, args.reuse, task["digest"])
        except subprocess.CalledProcessError as error:  # the others still run; its train.log says why
            done[run["name"]] = {"failed": f"exit status {error.returncode}, see {run['dir'] / 'train.log'}"}
            failed.append(run["name"])
        write_section(TITLE, section(args, task, done, info, load), args.docs)
        if "failed" in done[run["name"]]:
            continue
        try:
            measure(done[run["name"]], task, args)
            gc.collect()  # the checkpoint's model, before the next run trains
        except Exception as error:  # noqa: BLE001 - the training figures stand; the others still run
            traceback.print_exc()
            done[run["name"]]["failed"] = f"measuring: {type(error).__name__}: {str(error).splitlines()[0]}"
            failed.append(run["name"])
        print(f"{run['name']}: " + json.dumps({key: value for key, value in done[run["name"]].items()
                                               if key not in ("metrics", "overrides", "right")}), flush=True)
        write_section(TITLE, section(args, task, done, info, load), args.docs)
    print(f"all runs done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
