"""The shape contract: every (kind, head) pair, the classic shape bugs, class weights and decoding."""

import pytest
import torch
from torch import nn

from headfit import HeadfitConfigError, HeadfitDataError, Task

BINARY = ("neg", "pos")
TOPICS = ("food", "sports", "weather")


@pytest.mark.parametrize(
    ("kind", "labels", "activation", "outputs", "target_dtype", "loss_type"),
    [
        ("binary", BINARY, "softmax", 2, torch.long, nn.CrossEntropyLoss),
        ("binary", BINARY, "sigmoid", 1, torch.float32, nn.BCEWithLogitsLoss),
        ("multiclass", TOPICS, "softmax", 3, torch.long, nn.CrossEntropyLoss),
        ("multilabel", TOPICS, "sigmoid", 3, torch.float32, nn.BCEWithLogitsLoss),
    ],
)
def test_contract_table(kind, labels, activation, outputs, target_dtype, loss_type, device):
    task = Task(kind, labels, activation)
    assert task.num_outputs == outputs
    labels_in = torch.tensor([[1, 0, 1], [0, 1, 0]]) if kind == "multilabel" else torch.tensor([1, 0])
    targets = task.targets(labels_in.to(device))
    assert targets.dtype == target_dtype and targets.device.type == device
    assert targets.shape == ((2, 3) if kind == "multilabel" else (2,))
    loss_fn = task.loss().to(device)
    assert isinstance(loss_fn, loss_type)
    logits = torch.randn(2, outputs, device=device, requires_grad=True)
    loss = loss_fn(logits, targets)
    loss.backward()
    assert loss.ndim == 0 and logits.grad is not None
    probabilities = task.probabilities(logits)
    assert probabilities.shape == (2, len(labels))
    names = task.decode(logits)
    assert len(names) == 2
    flat = [n for row in names for n in row] if kind == "multilabel" else names
    assert set(flat) <= set(labels)


def test_binary_two_logits_accepts_index_and_column_labels():
    """The classic: a (B, 2) softmax head with labels (B,) or (B, 1) -- both become int64 (B,)."""
    task = Task("binary", BINARY, "softmax")
    as_vector = task.targets(torch.tensor([0, 1, 1]))
    as_column = task.targets(torch.tensor([[0], [1], [1]]))
    assert torch.equal(as_vector, as_column) and as_vector.dtype == torch.long
    logits = torch.tensor([[2.0, -1.0], [-1.0, 2.0], [0.0, 3.0]])
    assert task.loss()(logits, as_column).item() == pytest.approx(nn.functional.cross_entropy(logits, as_vector).item())


def test_a_multilabel_loss_is_each_rows_label_set_nll_so_tasks_with_more_labels_weigh_the_same():
    """A row's multilabel loss is -log p(its label set): the sum of its labels' BCE terms, averaged over rows (as
    CrossEntropy is -log p(its label)). Averaged over labels instead, a 28-label task would weigh 7x less than a
    4-label one beside it on a shared encoder."""
    logits, targets = torch.randn(5, 4), torch.randint(0, 2, (5, 4)).float()
    pos_weight = [1.0, 2.0, 3.0, 0.5]
    task = Task("multilabel", ("a", "b", "c", "d"), "sigmoid")
    per_label = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(pos_weight),
                                                               reduction="none")
    assert task.loss(pos_weight)(logits, targets).item() == pytest.approx(per_label.sum(1).mean().item())
    # eight labels, the first four repeated: twice the loss, not the same
    wide = Task("multilabel", tuple("abcdefgh"), "sigmoid").loss()
    assert wide(logits.repeat(1, 2), targets.repeat(1, 2)).item() == pytest.approx(2 * task.loss()(logits, targets).item())


def test_binary_one_logit_takes_float_targets_and_matches_bce():
    """The classic: one logit (B, 1) with int labels (B,) -- the task makes float (B,) and squeezes the logit."""
    task = Task("binary", BINARY, "sigmoid")
    targets = task.targets(torch.tensor([[1], [0]]))
    assert targets.dtype == torch.float32 and targets.shape == (2,)
    logits = torch.tensor([[0.3], [-1.2]])
    expected = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([1.0, 0.0]))
    assert task.loss()(logits, targets).item() == pytest.approx(expected.item())
    assert task.decode(torch.tensor([[2.0], [-2.0]])) == ["pos", "neg"]
    assert torch.allclose(task.probabilities(torch.tensor([[0.0]])), torch.tensor([[0.5, 0.5]]))


def test_bool_and_float_binary_labels():
    task = Task("binary", BINARY, "softmax")
    assert task.targets(torch.tensor([True, False])).tolist() == [1, 0]
    assert task.targets(torch.tensor([1.0, 0.0])).tolist() == [1, 0]
    with pytest.raises(HeadfitDataError, match="whole numbers"):
        task.targets(torch.tensor([0.7, 0.2]))


def test_one_hot_labels_with_a_softmax_head_become_ids():
    """The classic: one-hot targets given to a sparse loss."""
    task = Task("multiclass", TOPICS, "softmax")
    one_hot = torch.tensor([[0, 0, 1], [1, 0, 0]])
    assert task.targets(one_hot).tolist() == [2, 0]


def test_several_labels_per_row_with_a_softmax_head_is_an_error():
    task = Task("multiclass", TOPICS, "softmax")
    with pytest.raises(HeadfitDataError, match="not one-hot") as error:
        task.targets(torch.tensor([[1, 0, 1], [1, 0, 0]]))
    assert "task.kind=multilabel" in str(error.value)


def test_multilabel_with_index_labels_is_an_error():
    task = Task("multilabel", TOPICS, "sigmoid")
    with pytest.raises(HeadfitDataError, match=r"multi-hot targets \(batch, 3\)"):
        task.targets(torch.tensor([0, 2]))


def test_label_width_that_disagrees_with_the_labels_is_an_error():
    with pytest.raises(HeadfitDataError, match="task.labels"):
        Task("multilabel", TOPICS, "sigmoid").targets(torch.zeros(2, 5))
    with pytest.raises(HeadfitDataError, match="task.labels"):
        Task("multiclass", TOPICS, "softmax").targets(torch.zeros(2, 5))


def test_label_id_outside_the_labels_is_an_error():
    with pytest.raises(HeadfitDataError, match=r"label id 3 is outside the 3 labels"):
        Task("multiclass", TOPICS, "softmax").targets(torch.tensor([0, 3]))


def test_nan_labels_are_an_error():
    with pytest.raises(HeadfitDataError, match="NaN"):
        Task("binary", BINARY, "sigmoid").targets(torch.tensor([1.0, float("nan")]))


@pytest.mark.parametrize(("kind", "activation"), [("multilabel", "softmax"), ("multiclass", "sigmoid")])
def test_a_head_that_cannot_serve_the_kind_names_the_keys(kind, activation):
    with pytest.raises(HeadfitConfigError) as error:
        Task(kind, TOPICS, activation)
    assert "head" in error.value.where and "task.kind" in error.value.where
    assert "head=" in error.value.fix


def test_binary_needs_two_labels():
    with pytest.raises(HeadfitConfigError, match="exactly 2 labels"):
        Task("binary", TOPICS, "softmax")


def test_multilabel_pos_weight_is_per_label_and_changes_the_loss():
    task = Task("multilabel", TOPICS, "sigmoid")
    weighted = task.loss([1.0, 4.0, 2.0])
    assert weighted.pos_weight.tolist() == [1.0, 4.0, 2.0]
    logits, targets = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    expected = nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor([1.0, 4.0, 2.0]),
                                                              reduction="sum") / 2  # each row's labels summed
    assert weighted(logits, targets).item() == pytest.approx(expected.item())
    assert weighted(logits, targets) > task.loss()(logits, targets)


def test_class_weights_become_ce_weight_or_binary_pos_weight():
    assert Task("multiclass", TOPICS).loss([1.0, 2.0, 3.0]).weight.tolist() == [1.0, 2.0, 3.0]
    binary = Task("binary", BINARY, "sigmoid").loss([2.0, 6.0])
    assert binary.pos_weight.tolist() == [3.0]  # weights[1] / weights[0]


def test_wrong_number_of_class_weights_names_the_key():
    with pytest.raises(HeadfitConfigError) as error:
        Task("multiclass", TOPICS).resolve_class_weights([1.0, 2.0])
    assert error.value.where == "loss.class_weights"
    with pytest.raises(HeadfitConfigError, match="not among the labels"):
        Task("multiclass", TOPICS).resolve_class_weights({"cooking": 2.0})


def test_class_weights_by_name_default_to_one():
    assert Task("multiclass", TOPICS).resolve_class_weights({"sports": 3}) == [1.0, 3.0, 1.0]


def test_balanced_weights_match_hand_computed_values():
    # 10 rows: 6 food, 3 sports, 1 weather -> n / (k * count)
    weights = Task("multiclass", TOPICS).resolve_class_weights("balanced", [6, 3, 1])
    assert weights == pytest.approx([10 / 18, 10 / 9, 10 / 3])
    # multilabel, 10 rows: label counts 5, 2, 8 -> negatives / positives
    weights = Task("multilabel", TOPICS, "sigmoid").resolve_class_weights("balanced", [5, 2, 8], num_rows=10)
    assert weights == pytest.approx([1.0, 4.0, 0.25])
    with pytest.raises(HeadfitConfigError, match="never occur"):
        Task("multiclass", TOPICS).resolve_class_weights("balanced", [6, 0, 1])


def test_metrics_follow_the_kind():
    assert set(Task("binary", BINARY).metrics()) == {"accuracy", "macro_f1"}
    assert set(Task("multiclass", TOPICS).metrics()) == {"accuracy", "macro_f1"}
    assert set(Task("multilabel", TOPICS, "sigmoid").metrics()) == {"micro_f1", "macro_f1"}
    task = Task("multilabel", TOPICS, "sigmoid")
    metrics = task.metrics()
    targets = torch.tensor([[1, 0, 1], [0, 1, 0]])
    metrics.update(task.predict(task.probabilities(torch.tensor([[5.0, -5, 5], [-5, 5, -5]]))), targets)
    assert metrics.compute()["macro_f1"].item() == pytest.approx(1.0)


def test_decoding_multilabel_uses_thresholds():
    task = Task("multilabel", TOPICS, "sigmoid")
    probabilities = torch.tensor([[0.9, 0.4, 0.6]])
    assert task.names(task.predict(probabilities)) == [["food", "weather"]]
    assert task.names(task.predict(probabilities, thresholds=[0.95, 0.3, 0.7])) == [["sports"]]
