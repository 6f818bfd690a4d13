#!/usr/bin/env python
"""Training throughput and model FLOPs utilisation (MFU) on a CUDA GPU: a BERT-base-size encoder, bf16-mixed.

headfit's defaults otherwise: ClassifierModule with the softmax head (mean pooling), AdamW (fused) with the
linear schedule, batch 32, through a plain pytorch_lightning.Trainer. The encoder is BERT-base's architecture
(12 layers, hidden 768, 12 heads, intermediate 3072, vocabulary 30,522) with random weights built from its
config, so nothing is downloaded. Every row has exactly --seq-len tokens (no padding), 4 labels.

    python benchmarks/gpu.py                        # writes the "GPU training throughput" section of docs/benchmarks.md
    python benchmarks/gpu.py --precision 16-mixed --compile --no-write
    python benchmarks/gpu.py --device cpu --tiny --steps 2 --warmup 1 --no-write   # checks the script on a CPU

MFU = achieved model FLOPs/s / the GPU's peak dense bf16 (or fp16) FLOPs/s, with the model FLOPs of a training
step = tokens x (6 N + 12 L d S): N the parameters that multiply activations (the encoder without its embedding
tables, plus the head), 6 N for the forward (2 N) and backward (4 N) matmuls per token; 12 L d S for the
attention scores and their weighted sum (L layers, width d, sequence length S; PaLM, Chowdhery et al. 2022,
appendix B). Recomputation under gradient checkpointing is not counted.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import BertConfig  # noqa: E402

from headfit import ClassifierModule  # noqa: E402

# Peak dense (no sparsity) bf16/fp16 tensor-core TFLOP/s from NVIDIA's data sheets, by a piece of the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
               "L4": 121.0, "A10": 125.0}
SECTION = "GPU training throughput (BERT-base size, bf16-mixed, sequence length 128)"


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in device_name), None)


def bert_base(tiny: bool) -> dict:
    if tiny:  # for checking the script on a CPU
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          vocab_size=1000).to_dict()
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


def model_flops_per_token(module: ClassifierModule, seq_len: int) -> float:
    config = module.encoder.config
    matmul_parameters = sum(p.numel() for name, p in module.named_parameters()
                            if p.requires_grad and not name.startswith("encoder.embeddings."))
    return 6 * matmul_parameters + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def run(args: argparse.Namespace) -> dict:
    pl.seed_everything(0, workers=True)
    config = bert_base(args.tiny)
    module = ClassifierModule(encoder="bert-base (random init)", labels=["a", "b", "c", "d"], kind="multiclass",
                              encoder_config=config, compile=args.compile,
                              gradient_checkpointing=args.gradient_checkpointing)
    steps = args.warmup + args.steps
    loader = DataLoader(rows(steps * args.batch_size, args.seq_len, config["vocab_size"]), batch_size=args.batch_size,
                        shuffle=False, num_workers=0, pin_memory=args.device == "cuda")
    timer = StepTimer(args.warmup)
    trainer = pl.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, loader)
    samples_per_second = timer.steps * args.batch_size / timer.seconds
    tokens_per_second = samples_per_second * args.seq_len
    achieved = tokens_per_second * model_flops_per_token(module, args.seq_len)
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if args.device == "cuda" else None)
    return {"device": name, "samples_per_second": samples_per_second, "tokens_per_second": tokens_per_second,
            "achieved_tflops": achieved / 1e12, "peak_tflops": peak,
            "mfu": achieved / (peak * 1e12) if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None,
            "parameters": sum(p.numel() for p in module.parameters()), "steps_timed": timer.steps}


def report(args: argparse.Namespace, result: dict) -> str:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "unknown (pass --peak-tflops)"
    peak = f"{result['peak_tflops']:.0f}" if result["peak_tflops"] else "?"
    memory = f"{result['peak_memory_gib']:.1f}" if result["peak_memory_gib"] is not None else "-"
    return "\n".join([
        f"`python benchmarks/gpu.py` on {result['device']} (torch {torch.__version__}, git {commit}): "
        f"{result['parameters'] / 1e6:.0f} M parameters, batch {args.batch_size} x {args.seq_len} tokens, "
        f"precision {args.precision}, {result['steps_timed']} steps timed after {args.warmup} warm-up steps"
        + (", torch.compile" if args.compile else "") + (", gradient checkpointing" if args.gradient_checkpointing
                                                         else "") + ".",
        "",
        "| samples/s | tokens/s | model TFLOP/s | peak TFLOP/s | MFU | peak GPU memory (GiB) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {result['samples_per_second']:,.0f} | {result['tokens_per_second']:,.0f} | "
        f"{result['achieved_tflops']:.1f} | {peak} | {mfu} | {memory} |",
        "",
        "Model FLOPs per token: 6 N + 12 L d S (N: parameters outside the embedding tables; L layers, width d, "
        "sequence length S); MFU against the peak dense bf16 tensor-core rate of the data sheet. See the "
        "docstring of benchmarks/gpu.py.",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--compile", action="store_true", help="model.compile=true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 32-wide encoder instead of BERT-base")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak, where it is not in PEAK_TFLOPS")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False here "
              f"(torch {torch.__version__}). To check the script itself on a CPU: "
              "python benchmarks/gpu.py --device cpu --tiny --steps 2 --warmup 1 --no-write", file=sys.stderr)
        return 2
    result = run(args)
    text = report(args, result)
    print(text)
    default_run = not (args.tiny or args.compile or args.gradient_checkpointing) and args.precision == "bf16-mixed" \
        and (args.batch_size, args.seq_len) == (32, 128)
    if args.device == "cuda" and default_run and not args.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
