"""Label texts with a trained checkpoint: `python predict.py best.ckpt "a text" ...` or `--input FILE`.

The same command as `headfit-predict`; the code lives in headfit/predict_cli.py (the command line) and
headfit/predict.py (`Predictor`).
"""

from headfit.predict_cli import command

if __name__ == "__main__":
    command()
