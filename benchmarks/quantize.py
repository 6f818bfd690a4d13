#!/usr/bin/env python
"""Int8 ONNX against fp32 ONNX and transformers.pipeline (issue #16): texts/s and metric, and the gate refusing.

For each data set of benchmarks/predict.py (SST-2 dev, binary: accuracy; GoEmotions test, 28 labels, multilabel:
macro-F1 with thresholds tuned on GoEmotions dev), with predict.py's models (its quick training, from the bundled
MiniLM-L6 with head.pooling=cls: 200 steps for SST-2 as there, 800 for GoEmotions, which learns too little in 200 to
be scored; or --sst2-checkpoint / --goemotions-checkpoint):
1. GoEmotions: the thresholds tuned on dev (headfit/decision.py's tune_thresholds with the checkpoint's guards) and
   saved in the checkpoint, as headfit-train does on its validation split (the quick model trains without one);
2. exported with headfit-export's code: --format hf (for the pipeline), --format onnx (fp32), and --format onnx
   --quantize int8 --validate-on FILE (the gate, --max-drop 1.0): SST-2 validated on its dev set (the only labelled
   SST-2 split besides train; the gate selects nothing, so its figures are the dev figures), GoEmotions on dev;
3. timed as predict.py times its systems (the median of --repeats passes after a warm-up on 32 texts, batch 32):
   Predictor.from_onnx(fp32 export).predict, Predictor.from_onnx(int8 export).predict, pipeline(...)(texts), and
   the int8 export once more in onnxruntime's default session (every graph fusion on: what headfit's session,
   without headfit/onnx_model.py's SLOW_ON_CPU fusions, gains);
4. each system's metric on the evaluation set: its probabilities decided with the checkpoint's thresholds;
5. the gate refusing a deliberately broken quantisation: SST-2 exported with a quantiser whose int8 weights are
   zeroed after onnxruntime wrote them; the refusal is shown as headfit-export prints it.

    python benchmarks/quantize.py                                 # full run; writes its section of docs/benchmarks.md
    python benchmarks/quantize.py --max-rows 64 --train-steps 1   # smoke run; prints only

Needs ../shared/datasets (or --data-dir); without it the script says so and exits 0. Needs onnx, onnxscript and
onnxruntime (pip install ".[export]").
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import cores, machine  # noqa: E402

# benchmarks/predict.py, by its path: the name `predict` is the repository's predict.py, first on sys.path
_spec = importlib.util.spec_from_file_location("predict_benchmark", Path(__file__).with_name("predict.py"))
predict_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(predict_benchmark)
BATCH_SIZE, DATASETS = predict_benchmark.BATCH_SIZE, predict_benchmark.DATASETS
run_headfit, run_pipeline, train_quick = (predict_benchmark.run_headfit, predict_benchmark.run_pipeline,
                                          predict_benchmark.train_quick)

SPEED_TARGET, DROP_TARGET = 4.0, 0.5  # int8 texts/s over the pipeline's on SST-2 dev; metric points lost
TITLE = "Int8 ONNX export (SST-2 dev, GoEmotions test)"
METRIC = {"binary": "accuracy", "multilabel": "macro_f1"}
GATE_FILE = {"sst2": "dev.tsv", "goemotions": "dev.tsv"}


def labelled(task, spec: dict[str, Any], folder: Path, file: str, rows: int | None):
    """A labelled file of the data set, read by headfit-eval's reader (first `rows` rows for smoke runs)."""
    from headfit.eval import read_labelled

    read = read_labelled(task, folder / file, **data_options(spec, folder))
    return read if rows is None else read._replace(texts=read.texts[:rows], targets=read.targets[:rows])


def data_options(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """How headfit-eval (and --validate-on) reads the data set's labelled files."""
    return {"header": spec["header"], "text_column": spec["eval_text"], "label_column": "label" if spec["header"] else 1,
            "labels_file": str(folder / spec["labels_file"]) if spec["labels_file"] else None}


def tune_on_dev(checkpoint: Path, spec: dict[str, Any], folder: Path, rows: int | None) -> None:
    """Thresholds tuned on the dev file, saved into the checkpoint (what headfit-train does after fitting)."""
    import torch

    from headfit import Predictor
    from headfit.decision import tune_thresholds
    from headfit.module import SINGLE_TASK

    predictor = Predictor.from_checkpoint(checkpoint, batch_size=BATCH_SIZE, device="cpu")
    dev = labelled(predictor.task, spec, folder, "dev.tsv", rows)
    decisions = predictor.module.decisions[SINGLE_TASK]
    probabilities = torch.from_numpy(predictor.predict_proba(dev.texts, progress=False))
    decisions.thresholds.copy_(tune_thresholds(predictor.task, probabilities, dev.targets, **decisions.guards)[0])
    predictor.module.save_decisions(checkpoint)


def int8_instructions() -> str:
    """The CPU's vector instructions that onnxruntime's int8 matrix products use (VNNI: one instruction per 4 int8
    multiply-adds; without it, AVX2 takes three), as /proc/cpuinfo lists them."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    found = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if flag in flags.split()]
    return ", ".join(found) or "none of avx2, avx512f, avx512_vnni, avx_vnni, amx_int8"


def zeroed_quantiser(real):
    """A quantiser that breaks the model after onnxruntime has quantised it: every int8 weight set to 0."""
    def quantize_int8(fp32: Path, int8: Path) -> None:
        import numpy as np
        import onnx

        real(fp32, int8)
        graph = onnx.load(str(int8))
        for tensor in graph.graph.initializer:
            if tensor.data_type == onnx.TensorProto.INT8:
                zeros = np.zeros_like(onnx.numpy_helper.to_array(tensor))
                tensor.CopyFrom(onnx.numpy_helper.from_array(zeros, tensor.name))
        onnx.save(graph, str(int8))
    return quantize_int8


def measure(name: str, spec: dict[str, Any], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from headfit import Predictor, onnx_model
    from headfit.decision import threshold_metrics
    from headfit.export import export

    folder = args.data_dir / spec["folder"]
    checkpoint = getattr(args, f"{spec['folder']}_checkpoint")
    trained = checkpoint is None
    steps = args.goemotions_train_steps if spec["folder"] == "goemotions" else args.train_steps
    if trained:
        print(f"{name}: training a quick model ({steps} steps)", flush=True)
        checkpoint = train_quick(spec, folder, steps, out)
    if spec["kind"] == "multilabel":
        print(f"{name}: tuning the thresholds on dev", flush=True)
        tune_on_dev(checkpoint, spec, folder, args.max_rows)
    hf_dir, fp32_dir, int8_dir = (out / f"{spec['folder']}-{kind}" for kind in ("hf", "onnx", "int8"))
    gate_file = folder / GATE_FILE[spec["folder"]]
    if args.max_rows:  # smoke runs validate on the first rows only
        gate_file = out / f"gate-{spec['folder']}.tsv"
        lines = (folder / GATE_FILE[spec["folder"]]).read_text(encoding="utf-8").splitlines(keepends=True)
        gate_file.write_text("".join(lines[:args.max_rows + spec["header"]]), encoding="utf-8")
    print(f"{name}: exporting (hf, onnx, int8 with the gate on {gate_file.name})", flush=True)
    export(checkpoint, "hf", hf_dir)
    export(checkpoint, "onnx", fp32_dir)
    gate = {"validate_on": str(gate_file), "data": data_options(spec, folder)}
    quantization = export(checkpoint, "onnx", int8_dir, quantize="int8", **gate)["quantization"]

    fp32 = Predictor.from_onnx(fp32_dir, batch_size=BATCH_SIZE)
    data = labelled(fp32.task, spec, folder, spec["eval"], args.max_rows)
    thresholds = torch.tensor(list(fp32.thresholds.values()) or [0.5])
    result = {"name": name, "rows": len(data.texts), "kind": spec["kind"], "labels": len(fp32.labels),
              "trained": trained, "steps": steps, "checkpoint": checkpoint, "gate": quantization,
              "size": {kind: (path / "model.onnx").stat().st_size / 2**20 for kind, path in
                       (("fp32", fp32_dir), ("int8", int8_dir))}}
    with mock.patch.object(onnx_model, "SLOW_ON_CPU", []):  # the same int8 graph, in onnxruntime's default session
        int8_fused = Predictor.from_onnx(int8_dir, batch_size=BATCH_SIZE)
    for system, predictor in (("fp32", fp32), ("int8", Predictor.from_onnx(int8_dir, batch_size=BATCH_SIZE)),
                              ("int8, every fusion", int8_fused)):
        print(f"{name}: {system} ONNX, {len(data.texts)} texts", flush=True)
        seconds, rows = run_headfit(predictor, data.texts, args.repeats)
        probabilities = torch.from_numpy(np.stack([row["probabilities"] for row in rows]))
        result[system] = {"texts/s": len(data.texts) / seconds,
                          "metric": threshold_metrics(fp32.task, probabilities, data.targets,
                                                      thresholds)[METRIC[spec["kind"]]]}
    print(f"{name}: pipeline", flush=True)
    seconds, probabilities = run_pipeline(hf_dir, data.texts, fp32.labels, "cpu", args.repeats)
    result["pipeline"] = {"texts/s": len(data.texts) / seconds,
                          "metric": threshold_metrics(fp32.task, torch.from_numpy(probabilities).float(),
                                                      data.targets, thresholds)[METRIC[spec["kind"]]]}
    if spec["folder"] == "sst2":
        print(f"{name}: the gate against a broken quantisation", flush=True)
        result["refusal"] = refusal(checkpoint, out / "sst2-broken", gate)
    return result


def refusal(checkpoint: Path, out_dir: Path, gate: dict[str, Any]) -> str:
    """What headfit-export says when the quantiser breaks the model (and whether it wrote anything)."""
    from headfit import quantize
    from headfit.errors import HeadfitError
    from headfit.export import export

    with mock.patch.object(quantize, "quantize_int8", zeroed_quantiser(quantize.quantize_int8)):
        try:
            q = export(checkpoint, "onnx", out_dir, quantize="int8", **gate)["quantization"]
        except HeadfitError as error:
            return f"headfit-export: {error}" + ("" if not out_dir.exists() else "\n(BUT it left files behind)")
    # an untrained model (smoke runs) scores no better than a broken one
    return f"NOT REFUSED: {q['metric']} fp32 {q['fp32']:.4f}, int8 {q['int8']:.4f}, drop {q['drop_points']:.2f} points"


# ---- report -------------------------------------------------------------------------------------

def table(results: list[dict[str, Any]]) -> str:
    lines = ["| data set | rows | metric | pipeline | fp32 ONNX | int8 ONNX | int8 / pipeline | int8 / fp32 "
             "| drop (points) | the gate on dev: its metric, fp32 / int8 / drop | model.onnx fp32 / int8 |",
             "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        metric = {"binary": "accuracy", "multilabel": "macro-F1 (tuned thresholds)"}[r["kind"]]
        cells = [f"{r[s]['texts/s']:.1f} texts/s, {100 * r[s]['metric']:.2f}" for s in ("pipeline", "fp32", "int8")]
        gate = r["gate"]
        lines.append(f"| {r['name']} ({r['kind']}, {r['labels']} labels) | {r['rows']:,} | {metric} | "
                     + " | ".join(cells) + f" | {r['int8']['texts/s'] / r['pipeline']['texts/s']:.2f}x "
                     f"| {r['int8']['texts/s'] / r['fp32']['texts/s']:.2f}x "
                     f"| {100 * (r['fp32']['metric'] - r['int8']['metric']):.2f} "
                     f"| {gate['metric']}, {100 * gate['fp32']:.2f} / {100 * gate['int8']:.2f} / {gate['drop_points']:.2f} "
                     f"| {r['size']['fp32']:.0f} MB / {r['size']['int8']:.0f} MB |")
    return "\n".join(lines)


def section(args: argparse.Namespace, results: list[dict[str, Any]], command: str, info: dict[str, str],
            load: float) -> str:
    import onnxruntime
    import torch

    from headfit.onnx_model import SLOW_ON_CPU
    from headfit.quantize import SETTINGS

    models = "; ".join(f"{r['name']}: " + (f"trained here for {r['steps']} steps of {BATCH_SIZE} rows"
                                           if r["trained"] else f"`{r['checkpoint']}`") for r in results)
    verdicts = [f"- int8 >= {SPEED_TARGET:.0f}x the pipeline's texts/s on {r['name']}: "
                f"{r['int8']['texts/s'] / r['pipeline']['texts/s']:.2f}x, "
                f"**{'met' if r['int8']['texts/s'] >= SPEED_TARGET * r['pipeline']['texts/s'] else 'not met'}**"
                for r in results if r["kind"] == "binary"]
    verdicts += [f"- metric drop <= {DROP_TARGET} points on {r['name']}: {drop:.2f}, "
                 f"**{'met' if drop <= DROP_TARGET else 'not met'}**"
                 for r in results for drop in [100 * (r["fp32"]["metric"] - r["int8"]["metric"])]]
    fusions = [f"- headfit's onnxruntime session against onnxruntime's default one (every fusion on, SkipLayerNormFusion "
               f"included), the same int8 graph on {r['name']}: {r['int8']['texts/s']:.1f} against "
               f"{r['int8, every fusion']['texts/s']:.1f} texts/s, "
               f"{r['int8']['texts/s'] / r['int8, every fusion']['texts/s']:.2f}x (metric "
               f"{100 * r['int8']['metric']:.2f} against {100 * r['int8, every fusion']['metric']:.2f})" for r in results]
    refusals = [line for r in results if "refusal" in r for line in
                [f"The gate against a deliberately broken quantisation ({r['name']}: onnxruntime's int8 graph with "
                 "every int8 weight set to 0 afterwards, through the same `export(..., quantize=\"int8\")`): it "
                 "refuses, and OUT_DIR is not created:", "", "```", r["refusal"], "```"]]
    return "\n".join([
        f"Written by `benchmarks/quantize.py` on {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; per system "
        f"the median of {args.repeats} timed passes over the texts (wall-clock, after an untimed warm-up on 32 texts).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {info['cpu']}, int8 instructions: {int8_instructions()}; torch threads: {torch.get_num_threads()}, "
        f"onnxruntime {onnxruntime.__version__} (CPU provider, its default threads: one per core; headfit's session "
        f"turns off {', '.join(SLOW_ON_CPU)}: headfit/onnx_model.py); 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} when this was written",
        f"- Versions: {info['versions']}",
        f"- Models: benchmarks/predict.py's (the bundled MiniLM-L6, a linear head on the pooler); {models}. "
        "GoEmotions' thresholds tuned on GoEmotions dev and saved in the checkpoint before exporting; SST-2 decides "
        "at 0.5.",
        "- Systems: `pipeline(\"text-classification\", model=<--format hf export>, batch_size=32, top_k=None)`; "
        "`Predictor.from_onnx(<--format onnx export>)` (fp32) and `Predictor.from_onnx(<--quantize int8 export>)` "
        "(int8), batch 32 sorted by length, label names and every score. Each system's metric: its probabilities "
        "decided with the checkpoint's thresholds.",
        f"- Quantisation: `headfit-export --format onnx --quantize int8 --validate-on <dev file>`: onnxruntime's "
        f"`quant_pre_process` then `quantize_dynamic` with {SETTINGS} (int8 weights, one scale per output column; "
        "activations quantised per batch at run time; the embeddings stay fp32), gate --max-drop 1.0 on the data set's dev file (SST-2: the same dev "
        "set; GoEmotions: dev, while the table's metric is on test).",
        "",
        table(results),
        "",
        *verdicts,
        *fusions,
        "",
        *refusals,
    ])


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--sst2-checkpoint", type=Path, help="a headfit checkpoint for SST-2 (head.pooling=cls)")
    parser.add_argument("--goemotions-checkpoint", type=Path, help="a headfit checkpoint for GoEmotions (idem; "
                                                                   "its thresholds are tuned on dev and saved in it)")
    parser.add_argument("--train-steps", type=int, default=200, help="steps of the quick models (default 200)")
    parser.add_argument("--goemotions-train-steps", type=int, default=800,
                        help="steps of the quick GoEmotions model (default 800: after 200, as in predict.py, no label "
                             "scores above chance enough for its threshold to be tuned, and macro-F1 is 0)")
    parser.add_argument("--max-rows", type=int, help="the first N rows of each file only (smoke runs; nothing is "
                                                     "written then)")
    parser.add_argument("--datasets", default="all", help=f"comma-separated from {list(DATASETS)}, or all")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per system; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print the section, write no file")
    parser.add_argument("--work-dir", type=Path, help="keep the checkpoints and exports here (default: a temporary "
                                                      "directory, removed at the end)")
    args = parser.parse_args(argv)
    args.names = list(DATASETS) if args.datasets == "all" else [n.strip() for n in args.datasets.split(",")]
    if set(args.names) - set(DATASETS) or args.train_steps < 1 or args.repeats < 1:
        parser.error(f"--datasets takes names from {list(DATASETS)}; --train-steps and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/quantize.py", *sys.argv[1:]])
    missing = [str(args.data_dir / DATASETS[n]["folder"]) for n in args.names
               if not (args.data_dir / DATASETS[n]["folder"] / DATASETS[n]["eval"]).is_file()]
    if missing:
        print(f"skipped: {missing} not found (see ../shared/datasets/README.md, or give --data-dir)")
        return 0
    import torch

    predict_benchmark.quiet_libraries()
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's quantiser logs its advice on the root logger
    torch.set_num_threads(cores())
    load, info = os.getloadavg()[0], machine()
    with tempfile.TemporaryDirectory(prefix="headfit-quantize-bench-") as tmp:
        out = args.work_dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        results = [measure(name, DATASETS[name], args, out) for name in args.names]
    body = section(args, results, command, info, load)
    print("\n" + body)
    if args.max_rows is None and not args.no_write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
