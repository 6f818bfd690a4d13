"""docs/heads.md's "write your own head" recipe works as written.

The head module and the YAML files are read out of docs/heads.md's code blocks (the block whose first line is
`# attention_head.py`, `# conf/head/attention.yaml`, ...), so the docs cannot drift from what is tested. The
module goes into a temporary directory on sys.path, the YAML files into a copy of conf/, and the job runs
through `headfit.train.train` with the tiny encoder, exactly like tests/test_train.py.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from headfit import ClassifierModule, HeadfitConfigError
from headfit.train import train

from test_train import FAST

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "heads.md"
MODULE = "attention_head"


def doc_block(first_line: str) -> str:
    """The one fenced code block in docs/heads.md whose first line is `# <first_line>` (or `# <first_line>: ...`)."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    heading = re.compile(rf"# {re.escape(first_line)}(:.*)?")
    found = [block for block in blocks if heading.fullmatch(block.split("\n", 1)[0].strip())]
    assert len(found) == 1, f"docs/heads.md should hold one code block starting with '# {first_line}'"
    return found[0]


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    """The docs' head module importable as `attention_head`, and a copy of conf/ holding the docs' head YAMLs."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MODULE}.py").write_text(doc_block(f"{MODULE}.py"), encoding="utf-8")
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    for name in ("attention", "attention_sigmoid"):
        (conf / "head" / f"{name}.yaml").write_text(doc_block(f"conf/head/{name}.yaml"), encoding="utf-8")
    sys.modules.pop(MODULE, None)
    monkeypatch.syspath_prepend(str(code))
    yield conf
    sys.modules.pop(MODULE, None)


def config(conf_dir, output_dir, tiny_encoder, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose("train", overrides=[f"encoder.name_or_path={tiny_encoder}", f"paths.output_dir={output_dir}",
                                           f"paths.cache_dir={output_dir.parent / 'cache'}", *FAST, *overrides])


def test_documented_head_trains_checkpoints_and_reloads(recipe, tmp_path, tiny_encoder):
    run = tmp_path / "run"
    monitored = train(config(recipe, run, tiny_encoder, "head=attention"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert monitored == pytest.approx(metrics["val"]["val/macro_f1"])
    assert set(metrics["test"]) == {"test/loss", "test/accuracy", "test/macro_f1"}
    assert OmegaConf.load(run / "config.yaml").head._target_ == f"{MODULE}.AttentionPoolingHead"

    module = ClassifierModule.load_from_checkpoint(metrics["best_checkpoint"])
    assert type(module.head).__name__ == "AttentionPoolingHead" and module.task.activation == "softmax"
    assert module.head.classifier[-1].out_features == module.task.num_outputs == 4  # the demo's 4 topics
    assert not any(p.requires_grad for p in module.encoder.pooler.parameters())  # unused pooler frozen

    # The attention scores are what pools: they get a gradient, and padding gets no weight.
    hidden, mask = torch.randn(2, 5, module.head.score.in_features), torch.tensor([[1, 1, 1, 0, 0]] * 2)
    module.head.eval()
    logits = module.head(hidden, mask, None)
    assert logits.shape == (2, 4)
    logits.sum().backward()
    assert module.head.score.weight.grad.abs().sum() > 0
    changed_padding = hidden.clone()
    changed_padding[:, 3:] = 100.0
    assert torch.allclose(module.head(changed_padding, mask, None), logits)


def test_documented_sigmoid_variant_serves_the_multilabel_demo(recipe, tmp_path, tiny_encoder):
    run = tmp_path / "run"
    train(config(recipe, run, tiny_encoder, "experiment=demo_multilabel", "head=attention_sigmoid"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/loss", "val/micro_f1", "val/macro_f1", "val/macro_f1_at_0_5", "val/macro_f1_tuned"} <= set(metrics["val"])
    module = ClassifierModule.load_from_checkpoint(metrics["best_checkpoint"])
    assert type(module.head).__name__ == "SigmoidAttentionPoolingHead" and module.task.kind == "multilabel"


def test_shape_check_stops_a_head_of_the_wrong_width_with_the_documented_message(recipe, tmp_path, tiny_encoder):
    module_file = tmp_path / "code" / f"{MODULE}.py"  # where the recipe fixture wrote the docs' module
    module_file.write_text(module_file.read_text() + (
        "\n\nclass TooWideHead(AttentionPoolingHead):\n"
        "    def __init__(self, in_features, num_outputs, **options):\n"
        "        super().__init__(in_features, num_outputs + 1, **options)\n"))
    (recipe / "head" / "too_wide.yaml").write_text(f"_target_: {MODULE}.TooWideHead\n")
    with pytest.raises(HeadfitConfigError) as error:
        train(config(recipe, tmp_path / "run", tiny_encoder, "head=too_wide"))
    assert str(error.value) in DOC.read_text(encoding="utf-8")  # the message docs/heads.md shows, word for word
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training
