"""Long documents in the model: windows encoded, pooled by each head, aggregated per document, then classified."""

import pytest
import torch
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitConfigError
from headfit.aggregation import AGGREGATIONS, ChunkAggregation, chunk_layout

HEADS = {"binary": ("softmax", ["neg", "pos"]), "multiclass": ("softmax", ["a", "b", "c"]),
         "multilabel": ("sigmoid", ["a", "b", "c"])}


def windows(tiny_encoder, texts):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def test_the_layout_puts_each_window_in_its_document_s_row():
    mask, position = chunk_layout(torch.tensor([2, 1, 3]))
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    assert position.tolist() == [0, 1, 3, 6, 7, 8]


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_each_aggregation_reads_only_its_document_s_windows(how):
    torch.manual_seed(0)
    pooled, counts = torch.randn(6, 4), torch.tensor([2, 1, 3])
    aggregation = ChunkAggregation(how, 4)
    together = aggregation(pooled, *chunk_layout(counts))
    alone = torch.cat([aggregation(part, *chunk_layout(torch.tensor([len(part)])))
                       for part in pooled.split(counts.tolist())])
    assert together.shape == (3, 4) and torch.allclose(together, alone, atol=1e-6)
    assert torch.allclose(together[1], pooled[2], atol=1e-6)  # one window: its own vector, for every aggregation
    if how == "mean":
        assert torch.allclose(together[0], pooled[:2].mean(0))
    if how == "max":
        assert torch.allclose(together[2], pooled[3:].amax(0))


@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize("how", AGGREGATIONS)
def test_every_kind_and_head_decides_once_per_document(kind, how, tiny_encoder):
    head, labels = HEADS[kind]
    model = ClassifierModule(encoder=tiny_encoder, labels=labels, kind=kind, head=head, chunk_aggregation=how).eval()
    batch = windows(tiny_encoder, ["a good film", "it was great", "bad plot", "the movie", "an awful film"])
    logits = model(**batch, chunk_counts=torch.tensor([3, 2]))
    assert logits.shape == (2, model.task.num_outputs)
    one = model(**{k: v[3:] for k, v in batch.items()}, chunk_counts=torch.tensor([2]))
    assert torch.allclose(logits[1:], one, atol=1e-5)  # a document's logits do not depend on its batch
    probabilities, decisions = model.decide(logits)
    assert probabilities.shape == (2, len(labels)) and len(decisions) == 2


def test_a_one_window_document_is_what_truncation_gives(tiny_encoder):
    torch.manual_seed(0)
    chunked = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary",
                               chunk_aggregation="attention").eval()
    plain = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary").eval()
    plain.load_state_dict(chunked.state_dict(), strict=False)
    batch = windows(tiny_encoder, ["a good film", "bad plot"])
    assert torch.allclose(chunked(**batch, chunk_counts=torch.tensor([1, 1])), plain(**batch), atol=1e-6)


def test_several_tasks_aggregate_per_head_and_the_loss_counts_documents(tiny_encoder):
    model = ClassifierModule(encoder=tiny_encoder, chunk_aggregation="attention", tasks={
        "sentiment": {"labels": ["neg", "pos"], "kind": "binary"},
        "topic": {"labels": ["a", "b", "c"], "kind": "multilabel"}})
    batch = windows(tiny_encoder, ["a good film", "it was great", "bad plot"])
    batch.update(chunk_counts=torch.tensor([2, 1]), labels={"sentiment": torch.tensor([1, 0]),
                                                             "topic": torch.tensor([[1., 0, 0], [0, 1, 1]])})
    loss = model._step(model.on_before_batch_transfer(batch, 0), "val")
    loss.backward()
    assert torch.isfinite(loss) and set(model.aggregations) == {"sentiment", "topic"}
    assert model.aggregations["topic"].score.weight.grad is not None


def test_a_chunked_batch_for_a_truncating_model_is_refused(tiny_encoder):
    model = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary")
    with pytest.raises(HeadfitConfigError, match="several windows"):
        model(**windows(tiny_encoder, ["a", "b"]), chunk_counts=torch.tensor([2]))
    with pytest.raises(HeadfitConfigError, match="chunk aggregation"):
        ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary", chunk_aggregation="median")


def test_a_run_with_long_documents_trains_reports_its_windows_and_predicts_from_its_checkpoint(tmp_path, tiny_encoder):
    import json

    from test_train import config

    from conftest import write_rows
    from headfit.predict import Predictor
    from headfit.train import train

    long = " ".join(["the plot was awful and the film was very bad , not good at all ."] * 5)
    rows = [{"text": (long if i % 3 else "good") + f" {word}", "label": word}
            for i, word in enumerate(["good", "bad"] * 12)]
    path = write_rows(tmp_path / "data" / "train.csv", rows)
    train(config(tmp_path, tiny_encoder, "data=files", f"data.train_path={path}", f"data.val_path={path}",
                 "data.long_text=chunk", "data.max_length=16", "data.chunk_stride=4", "data.max_chunks=8",
                 "model.chunk_aggregation=attention"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["chunking"] == {"long_text": "chunk", "max_length": 16, "chunk_stride": 4, "max_chunks": 8,
                                   "aggregation": "attention"}
    predictor = Predictor.from_checkpoint(metrics["best_checkpoint"])
    assert predictor.module.chunking["chunk_stride"] == 4 and "attention" == predictor.module.hparams.chunk_aggregation
    assert len(predictor.predict([long, "good"])) == 2
