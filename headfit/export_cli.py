"""headfit-export's command line: arguments are parsed (and `--help` answered) before torch is imported; the
export itself is headfit/export.py's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from headfit.eval import add_data_arguments, data_options

FORMATS = ("hf", "onnx")
QUANTIZATIONS = ("int8",)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headfit-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a headfit checkpoint as a Hugging Face model directory (--format hf) or an ONNX graph "
                    "(--format onnx). See docs/predict.md for which heads each format can hold.",
        epilog="examples:\n  headfit-export best.ckpt --format hf exported-hf/\n"
               "  headfit-export best.ckpt --format onnx exported-onnx/\n"
               "  headfit-export best.ckpt --format onnx --quantize int8 --validate-on dev.tsv exported-int8/")
    parser.add_argument("checkpoint", help="a .ckpt written by headfit-train (checkpoints/best.ckpt)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the directory to write")
    parser.add_argument("--tokenizer", help="a tokenizer name or directory, for checkpoints saved without one")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--overwrite", action="store_true", help="write into an OUT_DIR that is not empty")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    int8 = parser.add_argument_group(
        "int8 export (docs/predict.md, Int8)", "quantise the ONNX graph, and write it only when it scores within "
        "--max-drop points of the fp32 graph on a labelled file, read as headfit-eval reads --input")
    int8.add_argument("--quantize", choices=QUANTIZATIONS, help="int8: onnxruntime's dynamic int8 quantisation")
    gate = [int8.add_argument("--validate-on", metavar="FILE", help="the labelled file the gate scores both graphs on"),
            int8.add_argument("--max-drop", type=float, metavar="POINTS",
                              help="refuse when int8's monitored metric is more than this many points (x 100) below "
                                   "fp32's (default 1.0)"),
            int8.add_argument("--refit-thresholds", action="store_true",
                              help="tune the int8 graph's thresholds on the --validate-on file (binary, multilabel)"),
            *add_data_arguments(int8, "--validate-on")]
    args = parser.parse_args(argv)
    args.gate_flags = [action.option_strings[0] for action in gate if getattr(args, action.dest) != action.default]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as transformers_logging

    from headfit.errors import command_failed
    from headfit.export import export

    transformers_logging.disable_progress_bar()  # transformers' bars for loading and saving weights
    try:
        written = export(args.checkpoint, args.format, args.out_dir, tokenizer=args.tokenizer, opset=args.opset,
                         overwrite=args.overwrite, **gate_options(args))
    except Exception as error:
        return command_failed("headfit-export", error, args.debug)
    q = written.get("quantization")
    print(f"wrote {written['dir']}: {', '.join(written['files'])}; {'the fp32 graph' if q else 'probabilities'} "
          f"{'matched' if q else 'match'} headfit's within {written['max_abs_difference']:.1e} on the probe texts")
    if q:
        print(f"model.onnx is its int8 quantisation: {q['metric']} {q['int8']:.4f} against fp32's {q['fp32']:.4f} "
              f"on {q['validate_on']} ({q['rows']} rows), a drop of {q['drop_points']:.2f} points (allowed "
              f"{q['max_drop_points']:g})" + (f"; thresholds refit on that file: {q['thresholds_refit']}"
                                              if q["thresholds_refit"] else ""))
    return 0


def gate_options(args: argparse.Namespace) -> dict:
    """export()'s quantisation options; the gate's flags without --quantize are an error naming them."""
    from headfit.errors import HeadfitConfigError

    if args.quantize is None:
        if args.gate_flags:
            raise HeadfitConfigError(f"{', '.join(args.gate_flags)} only apply to an int8 export",
                                     where=args.gate_flags[0], fix="add --quantize int8 --validate-on FILE, or "
                                                                   "leave them out")
        return {}
    return {"quantize": args.quantize, "validate_on": args.validate_on, "data": data_options(args),
            "refit_thresholds": args.refit_thresholds, **({} if args.max_drop is None else {"max_drop": args.max_drop})}


if __name__ == "__main__":
    sys.exit(main())
