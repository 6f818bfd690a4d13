"""Decisions and evaluation: thresholds, focal loss, calibration, reports, plots, and DDP reduction."""

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from headfit import ClassifierModule, HeadfitConfigError, Task
from headfit.decision import calibration_error, fit_temperature, tune_binary_threshold, tune_thresholds
from headfit.evaluation import evaluate

TOPICS = ("food", "sports", "weather")


def test_threshold_tuning_recovers_known_thresholds():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(4000, 3, generator=generator)
    true_thresholds = torch.tensor([0.2, 0.5, 0.8])
    targets = (scores >= true_thresholds).float()  # separable at exactly these thresholds
    tuned = tune_thresholds(scores, targets)
    assert torch.allclose(tuned, true_thresholds, atol=0.011)


def test_labels_with_too_few_positives_keep_half():
    scores = torch.rand(100, 2, generator=torch.Generator().manual_seed(1))
    targets = torch.zeros(100, 2)
    targets[:50, 0] = 1
    targets[0, 1] = 1
    assert tune_thresholds(scores, targets, min_positives=5)[1] == 0.5


@pytest.mark.parametrize("weights", [None, [1.0, 3.0, 0.5]])
def test_focal_loss_equals_cross_entropy_at_gamma_zero(weights, device):
    logits, targets = torch.randn(16, 3, device=device), torch.randint(0, 3, (16,), device=device)
    task = Task("multiclass", TOPICS)

    def loss(**options):
        return task.loss(weights, **options).to(device)(logits, targets)

    assert loss(focal_gamma=0.0).item() == pytest.approx(loss().item(), rel=1e-5)
    assert loss(focal_gamma=2.0) < loss()


def test_sigmoid_focal_loss_equals_bce_at_gamma_zero(device):
    logits, targets = torch.randn(16, 3, device=device), torch.randint(0, 2, (16, 3), device=device).float()
    task = Task("multilabel", TOPICS, "sigmoid")
    assert task.loss([1.0, 2.0, 3.0], focal_gamma=0.0).to(device)(logits, targets).item() == pytest.approx(
        task.loss([1.0, 2.0, 3.0]).to(device)(logits, targets).item(), rel=1e-5)
    binary = Task("binary", ("neg", "pos"), "sigmoid")
    one_logit, labels = torch.randn(8, 1, device=device), torch.randint(0, 2, (8,), device=device).float()
    assert binary.loss(focal_gamma=0.0).to(device)(one_logit, labels).item() == pytest.approx(
        binary.loss().to(device)(one_logit, labels).item(), rel=1e-5)


def test_loss_options_are_validated_against_the_head():
    with pytest.raises(HeadfitConfigError, match="label smoothing") as error:
        Task("multilabel", TOPICS, "sigmoid").loss(label_smoothing=0.1)
    assert error.value.where == "loss.label_smoothing"
    with pytest.raises(HeadfitConfigError) as error:
        Task("multiclass", TOPICS).loss(focal_gamma=2.0, focal_alpha=0.25)
    assert error.value.where == "loss.focal_alpha"
    smoothed = Task("multiclass", TOPICS).loss(label_smoothing=0.1)
    assert smoothed.label_smoothing == 0.1


def test_inverse_sqrt_weights_are_the_root_of_balanced():
    task = Task("multiclass", TOPICS)
    assert task.resolve_class_weights("inverse_sqrt", [6, 3, 1]) == pytest.approx(
        [w ** 0.5 for w in task.resolve_class_weights("balanced", [6, 3, 1])])


def test_temperature_scaling_fixes_overconfident_logits():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(3000, 3, generator=generator) * 1.5
    targets = torch.multinomial(true_logits.softmax(-1), 1, generator=generator)[:, 0]
    task = Task("multiclass", TOPICS)
    overconfident = true_logits * 4
    temperature = fit_temperature(task, overconfident, targets)
    assert temperature == pytest.approx(4.0, rel=0.15)
    assert calibration_error(task, (overconfident / temperature).softmax(-1), targets) < \
        calibration_error(task, overconfident.softmax(-1), targets)


@pytest.mark.parametrize(("kind", "labels", "head"), [
    ("binary", ("neg", "pos"), "headfit.heads.SigmoidHead"),
    ("multiclass", TOPICS, "headfit.heads.SoftmaxHead"),
    ("multilabel", TOPICS, "headfit.heads.SigmoidHead"),
])
def test_reports_and_plots_are_written_for_each_kind(kind, labels, head, tmp_path, tiny_encoder):
    module = ClassifierModule(encoder=tiny_encoder, labels=labels, kind=kind, head=head, calibrate=True,
                              thresholds="tuned" if kind != "multiclass" else None, min_positives=1)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, module.task.num_outputs, generator=generator)
    if kind == "multilabel":
        targets = (torch.rand(200, 3, generator=generator) < 0.3).float()
    else:
        targets = torch.randint(0, len(labels), (200,), generator=generator).float()
    summary = module.fit_decisions(logits, targets)
    assert "temperature" in summary and ("thresholds" in summary) == (kind != "multiclass")
    report = evaluate(module, logits, targets, "val", tmp_path)
    assert set(report) == {"macro", "micro", "weighted"}
    rows = (tmp_path / "val_report.csv").read_text().splitlines()
    assert rows[0] == "label,precision,recall,f1,support,auroc,average_precision" and len(rows) == 1 + len(labels) + 3
    expected = {"val_f1_per_label.png", "val_pr_curves.png"} if kind == "multilabel" else {"val_confusion_matrix.png"}
    assert {p.name for p in tmp_path.glob("*.png")} == expected | {"val_reliability.png"}


def test_thresholds_are_saved_with_the_checkpoint(tmp_path, tiny_encoder):
    import pytorch_lightning as pl

    module = ClassifierModule(encoder=tiny_encoder, labels=TOPICS, kind="multilabel",
                              head="headfit.heads.SigmoidHead", thresholds="tuned")
    module.thresholds.copy_(torch.tensor([0.1, 0.7, 0.3]))
    trainer = pl.Trainer(logger=False, max_steps=0)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.thresholds.tolist() == pytest.approx([0.1, 0.7, 0.3])
    probabilities, decisions = loaded.decide(torch.logit(torch.tensor([[0.2, 0.6, 0.4]])))
    assert decisions.tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("thresholds", [0.3, "tuned"])
def test_thresholds_for_a_multiclass_task_are_refused(tiny_encoder, thresholds):
    with pytest.raises(HeadfitConfigError, match="argmax") as error:
        ClassifierModule(encoder=tiny_encoder, labels=TOPICS, kind="multiclass", thresholds=thresholds)
    assert error.value.where == "decision.thresholds"


def test_binary_threshold_maximises_the_logged_macro_f1():
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(2000, generator=generator) < 0.2).float()
    scores = (0.3 * targets + 0.7 * torch.rand(2000, generator=generator)).clamp(0, 1)  # positives score higher
    threshold = tune_binary_threshold(scores, targets)
    task = Task("binary", ("neg", "pos"), "sigmoid")

    def macro_f1(t):
        metrics = task.metrics()
        metrics.update(task.predict(torch.stack([1 - scores, scores], -1), t), targets.long())
        return float(metrics.compute()["macro_f1"])

    assert macro_f1(threshold) >= max(macro_f1(t) for t in (0.3, 0.4, 0.5, 0.6, 0.7)) - 1e-6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_metrics(rank: int, world: int, port: int, logits, targets, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    task = Task("multilabel", TOPICS, "sigmoid")
    metrics = task.metrics()
    from torchmetrics import CatMetric
    gathered = CatMetric()
    # uneven shards, as the last batch of a real split gives
    shard = slice(0, 70) if rank == 0 else slice(70, None)
    metrics.update(task.predict(task.probabilities(logits[shard])), targets[shard].long())
    gathered.update(logits[shard])
    result = {k: float(v) for k, v in metrics.compute().items()}
    result["gathered_rows"] = len(gathered.compute())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as stream:
        json.dump(result, stream)
    dist.destroy_process_group()


def test_ddp_metric_reduction_equals_single_process(tmp_path):
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(101, 3, generator=generator), (torch.rand(101, 3, generator=generator) < 0.4).float()
    mp.spawn(_rank_metrics, args=(2, _free_port(), logits, targets, str(tmp_path)), nprocs=2, join=True)
    task = Task("multilabel", TOPICS, "sigmoid")
    single = task.metrics()
    single.update(task.predict(task.probabilities(logits)), targets.long())
    expected = {k: float(v) for k, v in single.compute().items()}
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result.pop("gathered_rows") == 101
        assert result == pytest.approx(expected, abs=1e-6)
