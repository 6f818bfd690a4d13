"""Export a checkpoint: `python export.py best.ckpt --format hf OUT_DIR` (or `--format onnx`).

The same command as `headfit-export`; the code lives in headfit/export.py.
"""

import sys

from headfit.export_cli import main

if __name__ == "__main__":
    sys.exit(main())
