"""The command line's rule, over a table of bad inputs: a config value, checkpoint or output location the user got
wrong stops the command with exit code 1 and a three-part message naming the key, file or path, and no
traceback. headfit-train, headfit-predict and headfit-export all go through `headfit.errors.explain`.

The cases run in process (the console scripts' own `main`, with sys.argv / argv as the shell gives them), and
one runs as a real subprocess."""

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from headfit import export, predict, train

from test_api_errors import FullDisk, bad_file
from test_predict import save_checkpoint
from test_train import FAST

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_encoder) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    made = {name: bad_file(kind, folder, tiny_encoder) for name, kind in
            [("truncated", "truncated"), ("random", "random bytes"), ("runs_code", "runs code (torch.save)"),
             ("not_headfit", "torch file, not headfit's")]}
    made["good"] = save_checkpoint(folder / "good.ckpt", tiny_encoder, ["neg", "pos"], "binary")
    made["a_file"] = folder / "a-file.txt"
    made["a_file"].write_text("not a directory\n")
    made["cache"] = folder / "cache"
    return made


def full_disk(monkeypatch, files):
    monkeypatch.setattr("headfit.checkpoint.open", lambda file, mode: FullDisk(file, mode.replace("b", "")),
                        raising=False)


TRAIN = {  # case: (overrides, what to patch, what the message says)
    "focal gamma a word": (["loss.focal_gamma=strong"], None,
                           ["loss.focal_gamma must be null or a number", "'strong'"]),
    "lr below zero": (["optim.lr=-0.001"], None, ["optim.lr must be a number > 0, got -0.001"]),
    "no gradient accumulation": (["trainer.accumulate_grad_batches=0"], None,
                                 ["trainer.accumulate_grad_batches must be a whole number >= 1, got 0"]),
    "Lightning refuses a trainer value": (["trainer.val_check_interval=2.5"], None,
                                          ["Lightning's Trainer refuses trainer.val_check_interval=2.5",
                                           "where: trainer.val_check_interval"]),
    "unknown trainer argument": (["+trainer.bogus=1"], None, ["trainer.bogus", "unexpected keyword argument"]),
    "max_length beyond the positions": (["data.max_length=1000"], None,
                                        ["data.max_length=1000 is more tokens than the encoder takes: bert has 128 "
                                         "positions", "data.max_length=128 or less"]),
    "a metric the task does not log": (["optimized_metric=val/bogus"], None,
                                       ["optimized_metric=val/bogus is not a metric", "val/loss", "val/macro_f1"]),
    "metrics.json-only metric": (["optimized_metric=val/macro_f1_at_0_5"], None, ["is not a metric this"]),
    "batch size 0 (the data module's check)": (["data.batch_size=0"], None, ["data.batch_size"]),
    "resume from a truncated file": (["ckpt_path={truncated}"], None,
                                     ["is not a readable headfit checkpoint: it is truncated"]),
    "resume from a file that runs code": (["ckpt_path={runs_code}"], None,
                                          ["refused: it holds Python objects that could run code (posix.mkdir)"]),
    "resume from another torch file": (["ckpt_path={not_headfit}"], None, ["not one headfit wrote"]),
    "the disk fills up during a checkpoint save": ([], full_disk,
                                                   ["could not write the checkpoint", "No space left on device",
                                                    "nothing half-written is left"]),
}


@pytest.mark.parametrize("case", list(TRAIN))
def test_headfit_train_stops_in_words(case, files, tiny_encoder, tmp_path, monkeypatch, capsys):
    overrides, patch, expected = TRAIN[case]
    if patch:
        patch(monkeypatch, files)
    run = tmp_path / "run"
    arguments = [override.format(**files) for override in overrides]
    monkeypatch.setattr(sys, "argv", ["headfit-train", f"encoder.name_or_path={tiny_encoder}", f"hydra.run.dir={run}",
                                      f"paths.cache_dir={files['cache']}", *FAST, *arguments])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as exited:
        train.main()
    captured = capsys.readouterr()
    output = captured.out + captured.err + ((run / "train.log").read_text() if (run / "train.log").exists() else "")
    assert exited.value.code == 1, output
    assert "Traceback" not in output and all(text in output for text in expected), output
    assert not list(run.rglob("*.ckpt")) and not list(run.rglob("*.partial"))  # nothing posing as a checkpoint


def read_only(folder: Path, monkeypatch) -> Path:
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes into a 0o555 directory: make the system's refusal as a read-only mount
        def refused(*args, dir=None, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    return folder


COMMANDS = {  # case: (main, arguments: {name} a file from `files`, {tmp} the test's directory; what it says)
    "predict: truncated": (predict.main, ["{truncated}", "good"], ["is not a readable headfit checkpoint: it is "
                                                                    "truncated", "where: "]),
    "predict: random bytes": (predict.main, ["{random}", "good"], ["it is not a file torch.save writes"]),
    "predict: runs code": (predict.main, ["{runs_code}", "good"],
                           ["refused: it holds Python objects that could run code (posix.mkdir); headfit checkpoints "
                            "load with weights_only"]),
    "predict: not headfit's": (predict.main, ["{not_headfit}", "good"], ["not one headfit wrote"]),
    "predict: max_length": (predict.main, ["{good}", "good", "--max-length", "1000"], ["bert has 128 positions"]),
    "predict: output is a directory": (predict.main, ["{good}", "good", "--output", "{tmp}"], ["Is a directory"]),
    "export: truncated": (export.main, ["{truncated}", "--format", "onnx", "{tmp}/out"],
                          ["is not a readable headfit checkpoint: it is truncated"]),
    "export: runs code": (export.main, ["{runs_code}", "--format", "hf", "{tmp}/out"],
                          ["refused: it holds Python objects that could run code"]),
    "export: into a file": (export.main, ["{good}", "--format", "hf", "{a_file}"],
                            ["a-file.txt is a file, and an export is a directory", "where: OUT_DIR"]),
    "export: into a read-only directory": (export.main, ["{good}", "--format", "hf", "{read_only}"],
                                           ["could not write into", "where: "]),
}


@pytest.mark.parametrize("case", list(COMMANDS))
def test_headfit_predict_and_export_stop_in_words(case, files, tmp_path, monkeypatch, capsys):
    main, arguments, expected = COMMANDS[case]
    names = {**files, "tmp": tmp_path}
    if any("{read_only}" in a for a in arguments):
        names["read_only"] = read_only(tmp_path / "read-only", monkeypatch)
    code = main([a.format(**names) for a in arguments])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == 1 and "Traceback" not in output, output
    assert all(text.lower() in output.lower() for text in expected), output
    assert not (files["good"].parent / "ran").exists()


def test_the_real_command_prints_no_traceback(files):
    result = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(files["random"]), "a text"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"headfit-predict: {files['random']} is not a readable headfit checkpoint" in result.stderr
