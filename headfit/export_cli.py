"""headfit-export's command line: arguments are parsed (and `--help` answered) before torch is imported; the
export itself is headfit/export.py's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

FORMATS = ("hf", "onnx")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headfit-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a headfit checkpoint as a Hugging Face model directory (--format hf) or an ONNX graph "
                    "(--format onnx). See docs/predict.md for which heads each format can hold.",
        epilog="examples:\n  headfit-export best.ckpt --format hf exported-hf/\n"
               "  headfit-export best.ckpt --format onnx exported-onnx/")
    parser.add_argument("checkpoint", help="a .ckpt written by headfit-train (checkpoints/best.ckpt)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the directory to write")
    parser.add_argument("--tokenizer", help="a tokenizer name or directory, for checkpoints saved without one")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUT_DIR that is not empty")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging

    from headfit.errors import command_failed
    from headfit.export import export

    transformers_logging.disable_progress_bar()  # transformers' bars for loading and saving weights
    try:
        written = export(args.checkpoint, args.format, args.out_dir, tokenizer=args.tokenizer, opset=args.opset,
                         overwrite=args.overwrite)
    except Exception as error:
        return command_failed("headfit-export", error, args.debug)
    print(f"wrote {written['dir']}: {', '.join(written['files'])}; probabilities match headfit's within "
          f"{written['max_abs_difference']:.1e} on the probe texts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
