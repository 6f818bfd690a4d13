"""Evaluate a trained model on a labelled file: `python eval.py best.ckpt --input new.csv` (or an ONNX export).

The same command as `headfit-eval`; the code lives in headfit/eval.py.
"""

import sys

from headfit.eval import main

if __name__ == "__main__":
    sys.exit(main())
