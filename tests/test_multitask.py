"""Several heads on one encoder: per-task losses, metrics, decisions and hierarchies, from plain batches."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitConfigError
from headfit.hierarchy import Hierarchy, decide_top_down
from headfit.shape_check import check_shapes
from headfit.task import Task

TEXTS = ["the movie was good", "an awful plot", "this film is great", "bad and very bad"] * 4
TOPICS = ["food", "sports", "weather"]
SENTIMENT = {"labels": ["neg", "pos"], "kind": "binary", "head": "softmax"}
TOPIC = {"labels": TOPICS, "kind": "multilabel", "head": "sigmoid", "min_positives": 1}


def module(tiny_encoder, **options):
    tasks = options.pop("tasks", {"sentiment": SENTIMENT, "topic": TOPIC})
    return ClassifierModule(encoder=tiny_encoder, tasks=tasks, lr=1e-3, **options)


def batches(tiny_encoder, labelled_sentiment=True):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    out = []
    for start in range(0, len(TEXTS), 4):
        texts = TEXTS[start:start + 4]
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        batch["labels"] = {"sentiment": torch.tensor([1, 0, 1, 0]),
                           "topic": torch.tensor([[1., 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])}
        batch["labelled"] = {"sentiment": torch.tensor([labelled_sentiment] * 4),
                             "topic": torch.tensor([True, True, True, False])}
        out.append(batch)
    return out


def trainer(**options):
    return pl.Trainer(**{"max_steps": 4, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                         "enable_model_summary": False, "accelerator": "cpu", "devices": 1, **options})


def test_two_tasks_of_different_kinds_train_log_per_task_and_reload(tmp_path, tiny_encoder):
    model = module(tiny_encoder)
    assert model.multitask and set(model.heads) == {"sentiment", "topic"}
    assert model.heads["sentiment"](torch.zeros(2, 3, 32), torch.ones(2, 3), None).shape == (2, 2)
    assert model.heads["topic"](torch.zeros(2, 3, 32), torch.ones(2, 3), None).shape == (2, 3)
    check_shapes(model, batches(tiny_encoder)[0])
    fit = trainer()
    fit.fit(model, DataLoader(batches(tiny_encoder), batch_size=None), DataLoader(batches(tiny_encoder), batch_size=None))
    logged = set(fit.callback_metrics)
    assert {"val/loss", "val/sentiment/loss", "val/topic/loss", "val/sentiment/accuracy", "val/topic/micro_f1",
            "val/mean_macro_f1"} <= logged
    expected = (fit.callback_metrics["val/sentiment/macro_f1"] + fit.callback_metrics["val/topic/macro_f1"]) / 2
    assert float(fit.callback_metrics["val/mean_macro_f1"]) == pytest.approx(float(expected))
    assert "val/mean_macro_f1" in model.logged_metrics()
    model.decisions["topic"].thresholds.fill_(0.3)
    path = tmp_path / "m.ckpt"
    fit.save_checkpoint(path)
    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.tasks == model.tasks and loaded.decisions["topic"].thresholds.tolist() == pytest.approx([0.3] * 3)
    inputs = {k: batches(tiny_encoder)[0][k] for k in ("input_ids", "attention_mask")}
    for name, logits in model.eval()(**inputs).items():
        assert torch.allclose(logits, loaded(**inputs)[name], atol=1e-6)
    with pytest.raises(HeadfitConfigError, match="several tasks"):
        loaded.task  # noqa: B018 (a one-task name on a model with two)


def test_a_batch_without_a_labelled_row_for_a_task_adds_nothing_and_is_finite(tiny_encoder):
    model = module(tiny_encoder)
    batch = batches(tiny_encoder, labelled_sentiment=False)[0]
    loss = model._step(model.on_before_batch_transfer(batch, 0), "val")
    assert torch.isfinite(loss)
    assert not model.val_metrics["sentiment"]["accuracy"].update_called  # no row counted for sentiment
    assert int(model.val_metrics["topic"]["micro_f1"].tp.sum() + model.val_metrics["topic"]["micro_f1"].fn.sum()) \
        == 4  # the 4 positives of its 3 labelled rows; the unlabelled 4th row adds none
    loss.backward()  # the graph is whole: DDP sees every head's parameters used


def test_outputs_keep_only_labelled_rows_for_tuning(tiny_encoder):
    model = module(tiny_encoder)
    model.collect_outputs = True
    for batch in batches(tiny_encoder):
        model._step(model.on_before_batch_transfer(batch, 0), "val")
    outputs = model.collected("val")
    assert outputs["topic"][2].tolist() == [True, True, True, False] * 4
    summary = model.fit_decisions(outputs)
    assert set(summary) == {"sentiment", "topic"} and all(row["positives"] <= 8 for row in summary["topic"]["labels"])


def test_task_options_default_to_the_module_s_and_errors_name_the_task(tiny_encoder):
    model = module(tiny_encoder, class_weights=None, tasks={
        "sentiment": {**SENTIMENT, "class_weights": [1.0, 3.0], "weight": 2.0}, "topic": TOPIC})
    assert model.losses["sentiment"].weight.tolist() == [1.0, 3.0] and model.weights == {"sentiment": 2.0, "topic": 1.0}
    with pytest.raises(HeadfitConfigError, match="task 'topic'") as error:
        module(tiny_encoder, tasks={"sentiment": SENTIMENT, "topic": {**TOPIC, "head": "softmax"}})
    assert "tasks.topic" in error.value.where
    with pytest.raises(HeadfitConfigError, match="unknown option") as error:
        module(tiny_encoder, tasks={"sentiment": {**SENTIMENT, "colour": 1}})
    assert error.value.where == "tasks.sentiment.colour"
    with pytest.raises(HeadfitConfigError) as error:
        module(tiny_encoder, tasks={"sentiment": {**SENTIMENT, "min_positives": -1}})
    assert error.value.where == "tasks.sentiment.min_positives"


FINE = ["joy", "love", "anger", "neutral"]
GROUPS = {"positive": ["joy", "love"], "negative": ["anger"], "neutral": ["neutral"]}


def hierarchy(child_kind="multilabel", parent_kind="multilabel"):
    child = Task(child_kind, tuple(FINE), "sigmoid" if child_kind == "multilabel" else "softmax")
    parent = Task(parent_kind, tuple(GROUPS), "sigmoid" if parent_kind == "multilabel" else "softmax")
    return Hierarchy.from_groups("fine", child, "coarse", parent, GROUPS)


def random_decisions(kind, probabilities):
    if kind == "multilabel":
        return probabilities > 0.5
    return torch.nn.functional.one_hot(probabilities.argmax(1), probabilities.shape[1]).bool()


def random_cases(seed):
    """(child kind, parent kind, link, child probabilities, parent probabilities, child, parent): every pair of
    kinds, 20 random batches of 16 rows each."""
    generator = torch.Generator().manual_seed(seed)
    for child_kind, parent_kind in [("multilabel", "multilabel"), ("multilabel", "multiclass"),
                                    ("multiclass", "multiclass"), ("multiclass", "multilabel")]:
        link = hierarchy(child_kind, parent_kind)
        for _ in range(20):
            child_p, parent_p = torch.rand(16, 4, generator=generator), torch.rand(16, 3, generator=generator)
            yield (child_kind, parent_kind, link, child_p, parent_p, random_decisions(child_kind, child_p),
                   random_decisions(parent_kind, parent_p))


def test_consistent_decoding_never_leaves_a_child_without_its_parent():
    for child_kind, parent_kind, link, child_p, parent_p, child, parent in random_cases(0):
        fixed_child, fixed_parent = link.make_consistent(child, parent, child_p, parent_p, parent_kind != "multilabel")
        assert link.inconsistent(fixed_child, fixed_parent) == 0
        if parent_kind != "multilabel":
            assert (fixed_parent.sum(1) == 1).all()
        if child_kind != "multilabel":
            assert torch.equal(fixed_child, child)  # a single-label child decides; its parent follows


def test_top_down_decoding_keeps_the_parent_and_drops_what_it_rules_out():
    for child_kind, parent_kind, link, child_p, parent_p, child, parent in random_cases(1):
        hot = decide_top_down([link], {"fine": child, "coarse": parent}, {"fine": child_p, "coarse": parent_p},
                              {"fine": child_kind != "multilabel", "coarse": parent_kind != "multilabel"})
        assert link.inconsistent(hot["fine"], hot["coarse"]) == 0
        if child_kind == "multilabel":  # only drops child labels; the parent decides as it did
            assert torch.equal(hot["coarse"], parent) and not (hot["fine"] & ~child).any()
        else:
            assert (hot["fine"].sum(1) == 1).all()  # a single-label child keeps exactly one label
            ruled_in = link.covers(parent).any(1)  # rows where some child label lies in a decided group
            assert torch.equal(hot["coarse"][ruled_in], parent[ruled_in])
            # inside the decided groups, the child's label is its most probable one there
            best = child_p.masked_fill(~link.covers(parent), -1).argmax(1)
            moved = ruled_in & ~(child & link.covers(parent)).any(1)
            assert torch.equal(hot["fine"][moved].float().argmax(1), best[moved])


def test_top_down_decoding_follows_every_parent_of_a_child():
    fine = Task("multiclass", tuple(FINE), "softmax")
    group = Task("multiclass", tuple(GROUPS), "softmax")
    polarity_groups = {"pos": ["joy", "love"], "neg": ["anger", "neutral"]}
    polarity = Task("binary", tuple(polarity_groups), "softmax")
    links = [Hierarchy.from_groups("fine", fine, "group", group, GROUPS),
             Hierarchy.from_groups("fine", fine, "polarity", polarity, polarity_groups)]
    probabilities = {"fine": torch.tensor([[0.1, 0.2, 0.6, 0.1], [0.1, 0.2, 0.6, 0.1]]),  # anger most probable
                     "group": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]),
                     "polarity": torch.tensor([[0.8, 0.2], [0.1, 0.9]])}
    hot = {"fine": torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0]], dtype=torch.bool),
           "group": torch.tensor([[1, 0, 0], [0, 0, 1]], dtype=torch.bool),  # positive; neutral
           "polarity": torch.tensor([[1, 0], [0, 1]], dtype=torch.bool)}  # pos; neg
    single = {"fine": True, "group": True, "polarity": True}
    decided = decide_top_down(links, hot, probabilities, single)
    # row 0: positive and pos allow joy or love: love is the more probable; row 1: neutral and neg allow neutral
    assert decided["fine"].float().argmax(1).tolist() == [1, 3]
    assert torch.equal(decided["group"], hot["group"]) and torch.equal(decided["polarity"], hot["polarity"])
    # positive and neg share no child label: the child's own label stands and both parents follow it
    hot["polarity"] = torch.tensor([[0, 1], [0, 1]], dtype=torch.bool)
    decided = decide_top_down(links, hot, probabilities, single)
    assert decided["fine"][0].tolist() == [False, False, True, False]  # anger
    assert decided["group"][0].tolist() == [False, True, False] and decided["polarity"][0].tolist() == [False, True]
    assert all(link.inconsistent(decided["fine"], decided[link.parent]) == 0 for link in links)


def test_independent_decoding_counts_what_consistent_removes():
    link = hierarchy()
    child = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)  # joy + anger; neutral
    parent = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool)  # positive; positive
    assert link.inconsistent(child, parent) == 2  # anger without negative, neutral without neutral
    fixed_child, fixed_parent = link.make_consistent(child, parent, child.float(), parent.float(), False)
    assert fixed_parent.tolist() == [[True, True, False], [True, False, True]] and torch.equal(fixed_child, child)


def test_the_module_decides_consistently_unless_told_otherwise(tiny_encoder):
    tasks = {"fine": {"labels": FINE, "kind": "multilabel", "head": "sigmoid"},
             "coarse": {"labels": list(GROUPS), "kind": "multilabel", "head": "sigmoid", "parent_of": "fine",
                        "groups": GROUPS}}
    model = module(tiny_encoder, tasks=tasks)
    logits = {"fine": torch.tensor([[3., -3, 3, -3]]), "coarse": torch.tensor([[3., -3, -3]])}
    assert model.decide_all(logits)["coarse"][1].tolist() == [[1, 1, 0]]
    assert model.decide_all(logits, "independent")["coarse"][1].tolist() == [[1, 0, 0]]
    assert model.inconsistencies(logits) == {"fine -> coarse": 1}
    assert model.inconsistencies(logits, "consistent") == {"fine -> coarse": 0}
    with pytest.raises(HeadfitConfigError, match="'cheerful'"):
        module(tiny_encoder, tasks={**tasks, "coarse": {**tasks["coarse"], "groups": {"positive": ["cheerful"]}}})


def test_a_checkpoint_saved_before_several_heads_still_loads(tmp_path, tiny_encoder):
    model = ClassifierModule(encoder=tiny_encoder, labels=TOPICS, kind="multilabel", head="sigmoid")
    model.thresholds.fill_(0.25)
    fit = trainer(max_steps=0)
    fit.strategy.connect(model)
    fit.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)
    for key in list(state["state_dict"]):  # the layout of headfit's earlier checkpoints
        for new, old in [("heads.label.", "head."), ("losses.label.", "loss_fn."), ("decisions.label.", "")]:
            if key.startswith(new):
                state["state_dict"][old + key[len(new):]] = state["state_dict"].pop(key)
    torch.save(state, tmp_path / "old.ckpt")
    assert "thresholds" in state["state_dict"] and "head.classifier.1.weight" in state["state_dict"]
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.thresholds.tolist() == [0.25] * 3
    assert torch.equal(loaded.head.classifier[1].weight, model.head.classifier[1].weight)


def test_a_multitask_run_end_to_end_writes_every_task_and_reloads(tmp_path, tiny_encoder, caplog):
    """Three tasks from one file through the Hydra job: a binary task, a multilabel one with partial labels, and a
    level derived from it; per-task metrics, reports, decisions and a checkpoint that predicts every task."""
    import json

    from test_train import config

    from conftest import write_rows
    from headfit.train import train

    topics = ["food", "food,sports", "weather", "", "sports", "weather,food", "", "sports"]
    rows = [{"text": text, "sentiment": ["pos", "neg"][i % 2], "topic": topics[i % 8]}
            for i, text in enumerate(TEXTS * 2)]
    path = write_rows(tmp_path / "data" / "train.csv", rows)
    caplog.set_level("INFO")
    train(config(tmp_path, tiny_encoder, "data=files", f"data.train_path={path}", f"data.val_path={path}",
                 f"data.test_path={path}", "+tasks.sentiment.label_column=sentiment",
                 "+tasks.topic.label_column=topic", "+tasks.topic.missing=ignore", "+tasks.topic.weight=2",
                 "+tasks.topic.min_positives=1", "+tasks.area.parent_of=topic",
                 "+tasks.area.groups={leisure:[sports,food]}"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["monitor"] == "val/mean_macro_f1"
    for name in ("sentiment", "topic", "area"):
        assert f"test/{name}/macro_f1" in metrics["test"] and (tmp_path / f"test_report_{name}.csv").is_file()
    assert set(metrics["decisions"]) == {"sentiment", "topic", "area"} and "thresholds" in metrics["decisions"]["topic"]
    assert metrics["test_report"]["inconsistent"]["topic -> area"]["consistent"] == 0
    assert "24 labelled, 8 without a label (tasks.topic.missing=ignore)" in caplog.text.replace("train/topic: ", "")
    loaded = ClassifierModule.load_from_checkpoint(metrics["best_checkpoint"])
    assert list(loaded.tasks) == ["sentiment", "topic", "area"] and loaded.tasks["area"].labels == ("leisure", "weather")
    assert loaded.decisions["topic"].thresholds.tolist() == pytest.approx(
        list(metrics["decisions"]["topic"]["thresholds"].values()))


def test_a_sweep_can_monitor_one_task_or_the_mean(tiny_encoder):
    from headfit.train import check_monitor

    model = module(tiny_encoder)
    for metric in ("val/mean_macro_f1", "val/topic/macro_f1", "val/sentiment/accuracy", "val/topic/loss"):
        check_monitor(metric, model)
    with pytest.raises(HeadfitConfigError, match="val/mean_macro_f1") as error:
        check_monitor("val/macro_f1", model)  # one task's name: the message lists the valid ones
    assert "tasks ['sentiment', 'topic']" in error.value.problem


def test_a_parent_s_thresholds_are_tuned_for_the_decisions_its_children_force(tiny_encoder):
    """Under consistent decoding a predicted child label brings its parent along; the parent's thresholds are
    tuned with those decisions in, so its own head does not add what its children already decide."""
    tasks = {"fine": {"labels": FINE, "kind": "multilabel", "head": "sigmoid", "min_positives": 1},
             "coarse": {"labels": list(GROUPS), "kind": "multilabel", "head": "sigmoid", "parent_of": "fine",
                        "groups": GROUPS, "min_positives": 1, "min_auroc": 0.0}}
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(400, 4, generator=generator) < 0.3
    coarse_truth = (truth.float() @ torch.tensor([[1., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])) > 0
    fine_logits = torch.where(truth, 4.0, -4.0)  # the fine head is right: it decides every coarse label by itself
    coarse_logits = torch.where(coarse_truth, 1.0, -1.0) + torch.randn(400, 3, generator=generator) * 1.5
    outputs = {"fine": (fine_logits, truth.float(), torch.ones(400, dtype=torch.bool)),
               "coarse": (coarse_logits, coarse_truth.float(), torch.ones(400, dtype=torch.bool))}
    consistent = module(tiny_encoder, tasks=tasks)
    consistent.fit_decisions(outputs)
    independent = module(tiny_encoder, tasks=tasks, hierarchy="independent")
    independent.fit_decisions(outputs)
    # with the children's decisions forced in, any firing of the noisy coarse head only adds false positives
    assert (consistent.decisions["coarse"].thresholds >= independent.decisions["coarse"].thresholds).all()
    decided = consistent.decide_all({"fine": fine_logits, "coarse": coarse_logits})["coarse"][1].bool()
    assert torch.equal(decided, coarse_truth)


def test_an_unknown_task_key_stops_the_run_before_the_data_is_read(tmp_path, tiny_encoder):
    from test_train import config

    from headfit.train import train

    with pytest.raises(HeadfitConfigError, match="unknown key") as error:
        train(config(tmp_path, tiny_encoder, "data=files", "data.train_path=does-not-exist.csv",
                     "+tasks.topic.label_column=topic", "+tasks.topic.colour=1"))
    assert error.value.where == "tasks.topic.colour" and "head, weight" in error.value.fix


def test_the_hierarchy_recipe_s_task_weights_take_a_plain_override(tmp_path, tiny_encoder):
    """`tasks.<name>.weight=2` (no `+`) on the recipe, as a sweep writes it: the recipe names every weight."""
    from test_train import config

    cfg = config(tmp_path, tiny_encoder, "experiment=goemotions_hierarchy", "tasks.ekman.weight=2")
    assert {name: task.weight for name, task in cfg.tasks.items()} == {"emotion": 1.0, "ekman": 2, "sentiment": 1.0}
