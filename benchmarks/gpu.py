#!/usr/bin/env python
"""Training throughput and model FLOPs utilisation (MFU) on a CUDA GPU, bf16-mixed: a BERT-base-size encoder; and
with --lora, LoRA against full fine-tuning on a BERT-large-size encoder (issue #16): samples/s, MFU and peak GPU
memory of each.

headfit's defaults otherwise: ClassifierModule with the softmax head (mean pooling), AdamW (fused) with the
linear schedule, batch 32, through a plain pytorch_lightning.Trainer. The encoder is BERT-base's architecture
(12 layers, hidden 768, 12 heads, intermediate 3072, vocabulary 30,522), or with --size large BERT-large's (24
layers, hidden 1024, 16 heads, intermediate 4096: 335 M parameters), with random weights built from its config,
so nothing is downloaded. Every row has exactly --seq-len tokens (no padding), 4 labels. LoRA: headfit's defaults
(`adapter="lora"`: r=8, alpha=16, no dropout, every linear layer of the blocks but the feed-forward output), --lora-r to change r.

    python benchmarks/gpu.py                        # writes the "GPU training throughput" section of docs/benchmarks.md
    python benchmarks/gpu.py --lora                 # full vs LoRA on BERT-large: writes its own section
    python benchmarks/gpu.py --precision 16-mixed --compile --no-write
    python benchmarks/gpu.py --device cpu --tiny --lora --steps 2 --warmup 1 --no-write   # checks the script on a CPU

Model FLOPs of a training step: counted, not from a formula, by torch.utils.flop_counter.FlopCounterMode over one
forward and backward pass of the model on a batch of the benchmark, before the timed training: every matrix
multiplication autograd runs, with attention through SDPA's math backend so that its two matmuls are counted on
every device (the fused kernels' counts differ by backend). The count is taken in eval mode (no recomputation
under gradient checkpointing: model FLOPs, not hardware FLOPs) and without torch.compile. Full fine-tuning comes
to ~6 N per token (N: the weights that multiply activations; 2 N forward, 2 N for the activations' gradients,
2 N for the weights'), plus attention's 12 L d S (PaLM, Chowdhery et al. 2022, appendix B). LoRA still runs the
forward and the activations' gradients through every frozen weight, but computes weight gradients for the
adapters only: ~4 N + 6 N_adapters per token, which the count gives without being told. MFU = model FLOPs/s over
the GPU's peak dense bf16 (or fp16) FLOPs/s (PEAK_TFLOPS, or --peak-tflops). Peak GPU memory:
torch.cuda.max_memory_allocated over the training, reset after the count (weights, gradients, optimizer state,
activations; not the CUDA context or the allocator's cache).
"""

from __future__ import annotations

import argparse
import gc
from contextlib import nullcontext
import platform
import subprocess
import sys
import time

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import BertConfig  # noqa: E402

from headfit import ClassifierModule  # noqa: E402

# Peak dense (no sparsity) bf16/fp16 tensor-core TFLOP/s from NVIDIA's data sheets, by a piece of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
               "L4": 121.0, "A10": 125.0}
SECTION = "GPU training throughput (BERT-base size, bf16-mixed, sequence length 128)"
LORA_SECTION = "LoRA against full fine-tuning on a GPU (BERT-large size, bf16-mixed, sequence length 128)"


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in device_name), None)


def bert_config(size: str, tiny: bool) -> dict:
    if tiny:  # for checking the script on a CPU
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          vocab_size=1000).to_dict()
    if size == "large":
        return BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096).to_dict()
    return BertConfig().to_dict()  # BERT-base


def rows(count: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (count, seq_len), generator=generator)
    labels = torch.randint(0, 4, (count,), generator=generator)
    return [{"input_ids": ids[i], "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": labels[i]}
            for i in range(count)]


class StepTimer(pl.Callback):
    """Wall time of the training steps after the first `warmup` (compilation, cuDNN autotuning, allocator)."""

    def __init__(self, warmup: int):
        self.warmup, self.started, self.seconds, self.steps = warmup, None, 0.0, 0

    def _sync(self, module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self._sync(module)
            self.started = time.perf_counter()

    def on_train_end(self, trainer, module):
        self._sync(module)
        self.seconds = time.perf_counter() - self.started
        self.steps = trainer.global_step - self.warmup


def count_flops(module: ClassifierModule, batch: dict, device: str) -> int:
    """The model FLOPs of one training step: one forward and backward pass of `module` on `batch`, counted by torch
    (see the docstring); the gradients it leaves are dropped."""
    modes = {submodule: submodule.training for submodule in module.modules()}  # Lightning trains in the modes it finds
    module.to(device).eval()  # eval: no recomputation under gradient checkpointing, no dropout
    batch = {key: value.to(device) for key, value in batch.items()}
    # without torch.compile's graphs (set_stance: torch >= 2.6), which the counter would not see into
    eager = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else nullcontext()
    with eager, sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        module.losses["label"](logits, module.task.targets(batch["labels"])).backward()
    module.zero_grad(set_to_none=True)
    for submodule, training in modes.items():
        submodule.train(training)
    return counter.get_total_flops()


def build(args: argparse.Namespace, lora: bool) -> ClassifierModule:
    return ClassifierModule(encoder=f"bert-{args.size} (random init)", labels=["a", "b", "c", "d"],
                            kind="multiclass", encoder_config=bert_config(args.size, args.tiny), compile=args.compile,
                            gradient_checkpointing=args.gradient_checkpointing,
                            **({"adapter": "lora", "lora": {"r": args.lora_r}} if lora else {}))


def run(args: argparse.Namespace, lora: bool = False) -> dict:
    pl.seed_everything(0, workers=True)
    module = build(args, lora)
    steps = args.warmup + args.steps
    data = rows(steps * args.batch_size, args.seq_len, module.encoder.config.vocab_size)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, num_workers=0,
                        pin_memory=args.device == "cuda")
    flops_per_step = count_flops(module, next(iter(loader)), args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    held_before = torch.cuda.memory_allocated() - module_bytes(module) if args.device == "cuda" else 0
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, loader)
    samples_per_second = timer.steps * args.batch_size / timer.seconds
    tokens_per_second = samples_per_second * args.seq_len
    flops_per_token = flops_per_step / (args.batch_size * args.seq_len)
    achieved = tokens_per_second * flops_per_token
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if args.device == "cuda" else None)
    return {"method": f"LoRA r={args.lora_r}" if lora else "full fine-tuning", "device": name,
            "samples_per_second": samples_per_second, "tokens_per_second": tokens_per_second,
            "flops_per_token": flops_per_token, "achieved_tflops": achieved / 1e12, "peak_tflops": peak,
            "mfu": achieved / (peak * 1e12) if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
            "parameters": sum(p.numel() for p in module.parameters()),
            "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad), "steps_timed": timer.steps,
            "held_before_gib": held_before / 2**30}


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def release(device: str) -> None:
    """What the previous run held on the GPU given back, so that the next one's peak memory is its own."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def report(args: argparse.Namespace, results: list[dict]) -> str:
    """The section: what ran, and a row per method (full fine-tuning; with --lora, then LoRA)."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    first = results[0]

    def row(result: dict) -> str:
        mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "unknown (pass --peak-tflops)"
        peak = f"{result['peak_tflops']:.0f}" if result["peak_tflops"] else "?"
        memory = f"{result['peak_memory_gib']:.1f}" if result["peak_memory_gib"] is not None else "-"
        return (f"| {result['method']} | {result['trainable']:,} | {result['samples_per_second']:,.0f} | "
                f"{result['tokens_per_second']:,.0f} | {result['flops_per_token'] / 1e9:.3g} | "
                f"{result['achieved_tflops']:.3g} | {peak} | {mfu} | {memory} |")

    lines = [
        f"`{command(args)}` on {first['device']} (torch {torch.__version__}, git {commit}): "
        f"{'a tiny BERT (2 layers, width 32)' if args.tiny else f'BERT-{args.size} architecture'}, "
        f"{first['parameters'] / 1e6:.3g} M parameters, random weights; batch {args.batch_size} x {args.seq_len} tokens, precision {args.precision}, "
        f"{first['steps_timed']} steps timed after {args.warmup} warm-up steps"
        + (", torch.compile" if args.compile else "")
        + (", gradient checkpointing" if args.gradient_checkpointing else "") + ".",
        "",
        "| method | trainable parameters | samples/s | tokens/s | model GFLOP/token | model TFLOP/s | peak TFLOP/s "
        "| MFU | peak GPU memory (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *map(row, results),
        "",
        "Model FLOPs: counted by torch's FlopCounterMode over one forward and backward pass (every matmul autograd "
        "runs, attention through SDPA's math backend; no recomputation): ~6 N per token for full fine-tuning, "
        "~4 N for LoRA, which still runs the forward and the activations' gradients through the frozen weights. "
        "MFU against the peak dense bf16 tensor-core rate of the data sheet; peak GPU memory: "
        "`torch.cuda.max_memory_allocated` over the training. See the docstring of benchmarks/gpu.py.",
    ]
    if len(results) == 2:
        full, lora = results
        if full["peak_memory_gib"] is not None:
            lines += ["", f"LoRA against full fine-tuning: peak GPU memory {lora['peak_memory_gib']:.1f} GiB vs "
                      f"{full['peak_memory_gib']:.1f} GiB ({100 * (lora['peak_memory_gib'] / full['peak_memory_gib'] - 1):+.0f}%), "
                      f"samples/s {lora['samples_per_second']:,.0f} vs {full['samples_per_second']:,.0f} "
                      f"({100 * (lora['samples_per_second'] / full['samples_per_second'] - 1):+.0f}%)."]
        if lora["held_before_gib"] > 0.05:  # what the first run left allocated counts in the second one's peak
            lines += ["", f"Note: {lora['held_before_gib']:.2f} GiB besides LoRA's model was still allocated when "
                      "its run began (left by full fine-tuning's) and is in its peak."]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    flags = [flag for flag, on in (("--lora", args.lora), ("--compile", args.compile),
                                   ("--gradient-checkpointing", args.gradient_checkpointing), ("--tiny", args.tiny))
             if on]
    defaults = {"precision": "bf16-mixed", "batch_size": 32, "seq_len": 128, "steps": 50, "warmup": 10,
                "size": "large" if args.lora else "base", "lora_r": 8, "device": "cuda"}
    flags += [f"--{key.replace('_', '-')} {getattr(args, key)}" for key, value in defaults.items()
              if getattr(args, key) != value]
    return " ".join(["python benchmarks/gpu.py", *flags])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--size", choices=["base", "large"],
                        help="BERT-base's or BERT-large's architecture (default: base; large with --lora)")
    parser.add_argument("--lora", action="store_true",
                        help="full fine-tuning, then LoRA (headfit's defaults), each measured on its own")
    parser.add_argument("--lora-r", type=int, default=8, help="the adapters' rank with --lora")
    parser.add_argument("--compile", action="store_true", help="model.compile=true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 32-wide encoder instead of BERT's")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak, where it is not in PEAK_TFLOPS")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    args.size = args.size or ("large" if args.lora else "base")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False here "
              f"(torch {torch.__version__}). To check the script itself on a CPU: "
              "python benchmarks/gpu.py --device cpu --tiny --lora --steps 2 --warmup 1 --no-write", file=sys.stderr)
        return 2
    results = [run(args)]
    if args.lora:
        release(args.device)
        results.append(run(args, lora=True))
    text = report(args, results)
    print(text)
    # Only the runs the sections describe are written: the defaults on a GPU (BERT-base; with --lora, BERT-large)
    default_run = not (args.tiny or args.compile or args.gradient_checkpointing) and args.precision == "bf16-mixed" \
        and (args.batch_size, args.seq_len, args.lora_r) == (32, 128, 8) \
        and args.size == ("large" if args.lora else "base")
    if args.device == "cuda" and default_run and not args.no_write:
        write_section(LORA_SECTION if args.lora else SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
