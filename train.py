"""Train a classifier: `python train.py [overrides]`, e.g. `python train.py experiment=demo_multilabel`.

The same job as the `headfit-train` command. The job itself lives in headfit/train.py; the configs in conf/.
"""

from headfit.train_cli import train

if __name__ == "__main__":
    train()
