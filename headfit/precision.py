"""`trainer.precision` checked against the device before training starts.

Lightning accepts some combinations it cannot honour and only warns: `16-mixed` on a CPU becomes `bf16-mixed`
without stopping, so a run could train in another precision than its config says. headfit stops instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from headfit.errors import HeadfitConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}  # older Lightning spellings


def check_precision(precision: Any, accelerator: Any = "auto") -> None:
    """Raise HeadfitConfigError when `precision` is unknown or cannot run on the device `accelerator` picks."""
    value = ALIASES.get(str(precision), str(precision))
    if value not in PRECISIONS:
        raise HeadfitConfigError(f"unknown precision {precision!r}", where="trainer.precision",
                                 fix=f"use one of {', '.join(PRECISIONS)}")
    device = device_type(accelerator)
    if value.startswith("16-") and device == "cpu":
        raise HeadfitConfigError(
            f"trainer.precision={value} (float16) needs a CUDA GPU, and this run trains on the CPU "
            "(Lightning would switch to bf16-mixed without stopping)",
            where=f"trainer.precision, with trainer.accelerator={accelerator}",
            fix="on a CPU use trainer.precision=bf16-mixed or 32-true; use 16-mixed on a CUDA GPU",
        )
    if value.startswith("bf16") and device == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise HeadfitConfigError(
            f"trainer.precision={value} needs a GPU with bfloat16 (Ampere or newer), and "
            f"{torch.cuda.get_device_name()} has none",
            where="trainer.precision", fix="use trainer.precision=16-mixed on this GPU",
        )
    if value.startswith("bf16") and device == "cpu" and not cpu_has_native_bf16():
        log.warning("trainer.precision=%s: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16), so steps "
                    "can be several times slower than with 32-true (docs/scale.md)", value)


def device_type(accelerator: Any) -> str:
    """The device `trainer.accelerator` resolves to here: "cuda", "mps", "cpu" (or the name given, e.g. "tpu")."""
    name = str(accelerator).lower()
    if name in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    return name


def cpu_has_native_bf16() -> bool:
    """Whether the CPU flags list bfloat16 instructions (Linux); True where that cannot be read."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True
    flags = cpuinfo.read_text(errors="ignore")
    return "avx512_bf16" in flags or "amx_bf16" in flags
