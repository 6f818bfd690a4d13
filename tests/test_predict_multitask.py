"""Serving a model with several tasks: Predictor results per task, headfit-predict's JSONL and CSV, the ONNX export
(per-task outputs, hierarchy-consistent decisions in the graph) and what refuses such a model (HF export, eval)."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitConfigError, Predictor
from headfit.export import export
from headfit.export import main as export_main
from headfit.predict import in_input_order, main

from conftest import write_rows, save_module
from test_predict import TEXTS

TWO_TASKS = {"sentiment": {"labels": ["neg", "pos"], "kind": "binary", "head": "softmax"},
             "topic": {"labels": ["food", "sports", "weather"], "kind": "multilabel", "head": "sigmoid",
                       "thresholds": [0.3, 0.5, 0.7]}}
FINE = ["joy", "love", "anger", "neutral"]
GROUPS = {"positive": ["joy", "love"], "negative": ["anger"], "neutral": ["neutral"]}
POLARITY = {"pos": ["joy", "love"], "neg": ["anger", "neutral"]}
# Every kind, and both kinds of parent: a single-label one (group) and a multilabel one (polarity).
HIERARCHY = {"fine": {"labels": FINE, "kind": "multilabel", "thresholds": [0.3, 0.4, 0.5, 0.45]},
             "group": {"labels": list(GROUPS), "kind": "multiclass", "parent_of": "fine", "groups": GROUPS},
             "polarity": {"labels": list(POLARITY), "kind": "multilabel", "parent_of": "fine", "groups": POLARITY},
             "sentiment": {"labels": ["neg", "pos"], "kind": "binary", "head": "sigmoid"}}


def save_checkpoint(path, encoder, tasks, *, temperature=None, biases=None, hierarchy="consistent"):
    torch.manual_seed(0)
    module = ClassifierModule(encoder=encoder, tasks=tasks, hierarchy=hierarchy)
    for name, value in (temperature or {}).items():
        module.decisions[name].temperature.fill_(value)
    with torch.no_grad():  # a random model decides alike for every text: biases make its heads disagree
        for name, bias in (biases or {}).items():
            module.heads[name].classifier[-1].bias.add_(torch.tensor(bias))
    module.tokenizer, module.max_length = AutoTokenizer.from_pretrained(encoder), 32
    return save_module(module, path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_encoder):
    folder = tmp_path_factory.mktemp("multitask")
    return {"two": save_checkpoint(folder / "two.ckpt", tiny_encoder, TWO_TASKS, temperature={"sentiment": 2.0}),
            # on their own, the parents decide against the fine labels: group "negative", polarity nothing
            "hierarchy": save_checkpoint(folder / "hierarchy.ckpt", tiny_encoder, HIERARCHY,
                                         temperature={"sentiment": 1.5},
                                         biases={"group": [0.0, 10.0, 0.0], "polarity": [-10.0, -10.0]})}


def one_at_a_time(predictor, texts, hierarchy=None):
    """Each text alone through `decide_all`: the reference for order, padding and decoding."""
    module, rows = predictor.module, []
    with torch.no_grad():
        for text in texts:
            encoded = predictor.tokenizer([text], truncation=True, max_length=predictor.max_length,
                                          return_tensors="pt")
            decided = module.decide_all(module.logits(**encoded), hierarchy)
            rows.append({name: (p[0].numpy(), module.tasks[name].names(d)[0]) for name, (p, d) in decided.items()})
    return rows


def decided(result):
    return result.get("labels", result.get("label"))


def inconsistent(results):
    """(row, fine label) predictions whose group or polarity is not predicted."""
    count = 0
    for result in results:
        groups = {result["group"]["label"]}
        polarity = set(result["polarity"]["labels"])
        for label in result["fine"]["labels"]:
            count += (not any(label in GROUPS[g] for g in groups)) + (not any(label in POLARITY[p] for p in polarity))
    return count


# ---- the Python API ----------------------------------------------------------------------------------

def test_predict_gives_every_task_s_result_per_text_in_input_order(checkpoints):
    predictor = Predictor.from_checkpoint(checkpoints["two"], batch_size=2)  # batches sorted by length
    assert predictor.multitask and list(predictor.tasks) == ["sentiment", "topic"]
    assert predictor.labels == {"sentiment": ["neg", "pos"], "topic": ["food", "sports", "weather"]}
    assert predictor.thresholds == {"sentiment": {"pos": 0.5},
                                    "topic": pytest.approx({"food": 0.3, "sports": 0.5, "weather": 0.7})}
    with pytest.raises(HeadfitConfigError, match="several tasks") as error:
        predictor.task  # noqa: B018 (a one-task name on a model with two)
    assert "predictor.tasks" in error.value.fix

    results, probabilities = predictor.predict(TEXTS), predictor.predict_proba(TEXTS)
    assert set(probabilities) == {"sentiment", "topic"}
    assert probabilities["sentiment"].shape == (len(TEXTS), 2) and probabilities["topic"].shape == (len(TEXTS), 3)
    assert probabilities["topic"].dtype == np.float32
    for result, expected, i in zip(results, one_at_a_time(predictor, TEXTS), range(len(TEXTS))):
        assert set(result) == {"sentiment", "topic"}
        assert set(result["sentiment"]) == {"label", "scores", "probabilities"}
        assert set(result["topic"]) == {"labels", "scores", "probabilities"}
        for name in ("sentiment", "topic"):
            np.testing.assert_allclose(result[name]["probabilities"], expected[name][0], atol=1e-5)
            np.testing.assert_allclose(result[name]["probabilities"], probabilities[name][i])
            assert decided(result[name]) == expected[name][1]
            assert list(result[name]["scores"]) == predictor.labels[name]
    assert [r["topic"]["labels"] for r in results] == [
        [name for name, p, t in zip(["food", "sports", "weather"], row, [0.3, 0.5, 0.7]) if p >= t]
        for row in probabilities["topic"]]  # each task's own thresholds

    best = predictor.predict(TEXTS[:1], top_k=1)[0]  # per task
    assert [len(best[name]["scores"]) for name in ("sentiment", "topic")] == [1, 1]
    assert list(best["topic"]["scores"]) == [predictor.labels["topic"][int(probabilities["topic"][0].argmax())]]
    empty = predictor.predict_proba([])
    assert empty["sentiment"].shape == (0, 2) and empty["topic"].shape == (0, 3) and predictor.predict([]) == []


def test_decisions_follow_the_hierarchy_unless_the_module_is_told_otherwise(checkpoints):
    predictor = Predictor.from_checkpoint(checkpoints["hierarchy"], batch_size=4)
    assert predictor.module.hparams.hierarchy == "consistent"
    consistent = predictor.predict(TEXTS)
    assert inconsistent(consistent) == 0
    assert [{n: decided(r[n]) for n in r} for r in consistent] == \
        [{n: names for n, (_, names) in row.items()} for row in one_at_a_time(predictor, TEXTS, "consistent")]
    assert {r["group"]["label"] for r in consistent} != {"negative"}  # the fine labels moved their group

    predictor.module.hparams.hierarchy = "independent"  # as benchmarks/multitask.py counts disagreements
    independent = predictor.predict(TEXTS)
    assert inconsistent(independent) > 0
    assert [r["group"]["label"] for r in independent] == ["negative"] * len(TEXTS)
    assert [{n: decided(r[n]) for n in r} for r in independent] == \
        [{n: names for n, (_, names) in row.items()} for row in one_at_a_time(predictor, TEXTS, "independent")]
    for a, b in zip(consistent, independent):  # the decoding changes, the probabilities do not
        np.testing.assert_array_equal(a["group"]["probabilities"], b["group"]["probabilities"])


def test_in_input_order_merges_each_task_on_its_own():
    outputs = [{"probabilities": {"a": torch.tensor([[0.1], [0.2]]), "b": torch.tensor([[1.0, 0], [0, 1]])},
                "labels": {"a": ["x", "y"], "b": [["u"], []]}, "index": torch.tensor([2, 0])},
               {"probabilities": {"a": torch.tensor([[0.3]]), "b": torch.tensor([[1.0, 1]])},
                "labels": {"a": ["z"], "b": [["u", "v"]]}, "index": torch.tensor([1])}]
    merged = in_input_order(outputs)
    assert merged["probabilities"]["a"].flatten().tolist() == pytest.approx([0.2, 0.3, 0.1])
    assert merged["labels"] == {"a": ["y", "z", "x"], "b": [[], ["u", "v"], ["u"]]}
    assert merged["probabilities"]["b"].tolist() == [[0, 1], [1, 1], [1, 0]]


# ---- the command line --------------------------------------------------------------------------------

def run_main(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_a_jsonl_key_per_task(checkpoints, tmp_path, capsys):
    expected = Predictor.from_checkpoint(checkpoints["two"]).predict(TEXTS[:3])
    code, out, _ = run_main([checkpoints["two"], *TEXTS[:3], "--include-text"], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [list(r) for r in records] == [["line", "text", "sentiment", "topic"]] * 3
    assert [r["text"] for r in records] == TEXTS[:3]
    for record, result in zip(records, expected):
        assert set(record["sentiment"]) == {"label", "scores"} and set(record["topic"]) == {"labels", "scores"}
        assert record["sentiment"]["label"] == result["sentiment"]["label"]
        assert record["topic"]["labels"] == result["topic"]["labels"]
        assert record["topic"]["scores"] == pytest.approx(result["topic"]["scores"], abs=1e-5)

    path = write_rows(tmp_path / "reviews.csv", [{"id": f"r{i}", "review": t} for i, t in enumerate(TEXTS)])
    code, out, _ = run_main([checkpoints["two"], "-i", path, "--text-column", "review", "--id-column", "id",
                             "--top-k", "2"], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["id"] for r in records] == [f"r{i}" for i in range(len(TEXTS))]
    assert [len(r["sentiment"]["scores"]) for r in records] == [2] * len(TEXTS)
    assert [len(r["topic"]["scores"]) for r in records] == [2] * len(TEXTS)


def test_cli_writes_csv_columns_per_task(checkpoints, tmp_path, capsys):
    output = tmp_path / "predictions.csv"
    code, _, _ = run_main([checkpoints["two"], *TEXTS[:3], "--output", output], capsys)
    rows = list(csv.DictReader(output.open(encoding="utf-8")))
    assert code == 0 and list(rows[0]) == [
        "line", "sentiment_label", "topic_labels", "sentiment_score_neg", "sentiment_score_pos", "topic_score_food",
        "topic_score_sports", "topic_score_weather"]
    expected = Predictor.from_checkpoint(checkpoints["two"]).predict(TEXTS[:3])
    assert [row["sentiment_label"] for row in rows] == [e["sentiment"]["label"] for e in expected]
    assert [row["topic_labels"] for row in rows] == [",".join(e["topic"]["labels"]) for e in expected]
    assert float(rows[2]["topic_score_sports"]) == pytest.approx(expected[2]["topic"]["scores"]["sports"], abs=1e-5)

    code, out, _ = run_main([checkpoints["two"], TEXTS[0], "--output-format", "csv", "--top-k", "1"], capsys)
    header, row = list(csv.reader(io.StringIO(out)))
    assert header == ["line", "sentiment_label", "topic_labels", "sentiment_top1", "sentiment_top1_score",
                      "topic_top1", "topic_top1_score"]
    assert row[3] == row[1]  # a softmax task's label is its most probable one


def test_cli_stops_when_a_task_is_named_like_a_record_key(tiny_encoder, tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, {"text": TWO_TASKS["sentiment"],
                                                                     "topic": TWO_TASKS["topic"]})
    code, out, err = run_main([checkpoint, "good", "--include-text", "--output", tmp_path / "out.jsonl"], capsys)
    assert code == 1 and "a task called 'text'" in err and "leave out --include-text" in err
    assert not (tmp_path / "out.jsonl").exists()  # stopped before writing
    code, out, _ = run_main([checkpoint, "good"], capsys)
    assert code == 0 and set(json.loads(out)) == {"line", "text", "topic"}


def test_predict_help_answers_without_importing_torch():
    code = ("import sys\nfrom headfit.predict_cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False False")


# ---- export and evaluation ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_export(checkpoints, tmp_path_factory):
    """The hierarchy checkpoint exported to ONNX (it takes seconds)."""
    pytest.importorskip("onnxruntime")
    out_dir = tmp_path_factory.mktemp("onnx-multitask") / "onnx"
    assert export_main([str(checkpoints["hierarchy"]), "--format", "onnx", str(out_dir)]) == 0
    return checkpoints["hierarchy"], out_dir


def test_onnx_export_has_every_task_s_outputs_and_the_checkpoint_s_decisions(onnx_export):
    import onnxruntime

    checkpoint, out_dir = onnx_export
    predictor = Predictor.from_checkpoint(checkpoint)
    session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"{name}.{what}" for name in HIERARCHY
                                                       for what in ("probabilities", "decisions", "logits")]
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    for texts in (TEXTS[:1], TEXTS, ["good"] * 9):
        encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
        outputs = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {i.name: encoded[i.name] for i in session.get_inputs()})))
        probabilities, expected = predictor.predict_proba(texts), predictor.predict(texts)
        for name, task in predictor.tasks.items():
            assert np.abs(outputs[f"{name}.probabilities"] - probabilities[name]).max() <= 1e-4
            assert task.names(torch.from_numpy(outputs[f"{name}.decisions"])) == [decided(r[name]) for r in expected]


def test_onnx_export_decides_top_down_in_its_graph(tiny_encoder, tmp_path):
    import onnxruntime

    # a single-label child of two parents: the graph holds the moves to the parents' groups and the fallback
    tasks = {**HIERARCHY, "fine": {"labels": FINE, "kind": "multiclass"}}
    checkpoint = save_checkpoint(tmp_path / "top_down.ckpt", tiny_encoder, tasks, hierarchy="top_down",
                                 biases={"group": [0.0, 10.0, 0.0], "polarity": [-10.0, 10.0]})
    assert export_main([str(checkpoint), "--format", "onnx", str(tmp_path / "onnx")]) == 0  # checks decisions too
    predictor = Predictor.from_checkpoint(checkpoint)
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    encoded = AutoTokenizer.from_pretrained(tmp_path / "onnx")(TEXTS, padding=True, return_tensors="np")
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {i.name: encoded[i.name] for i in session.get_inputs()})))
    expected = predictor.predict(TEXTS)
    for name, task in predictor.tasks.items():
        assert task.names(torch.from_numpy(outputs[f"{name}.decisions"])) == [decided(r[name]) for r in expected]
    assert {r["group"]["label"] for r in expected} == {"negative"}  # the parents decide (and neg) ...
    assert {r["fine"]["label"] for r in expected} == {"anger"}  # ... and the child follows: their one shared label


def test_onnx_metadata_describes_every_task_and_the_hierarchy(onnx_export):
    import onnxruntime

    _, out_dir = onnx_export
    metadata = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    tasks = json.loads(metadata["tasks"])
    assert list(tasks) == list(HIERARCHY) and metadata["hierarchy"] == "consistent" and metadata["max_length"] == "32"
    assert "labels" not in metadata  # one set of labels per task, in `tasks`
    assert tasks["fine"] == {"labels": FINE, "kind": "multilabel", "activation": "sigmoid",
                             "thresholds": pytest.approx(dict(zip(FINE, [0.3, 0.4, 0.5, 0.45]))), "temperature": 1.0,
                             "parent_of": None, "groups": None}
    assert tasks["group"]["parent_of"] == "fine" and tasks["group"]["groups"] == GROUPS
    assert tasks["group"]["thresholds"] == {} and tasks["polarity"]["groups"] == POLARITY
    assert tasks["sentiment"]["temperature"] == pytest.approx(1.5) and tasks["sentiment"]["thresholds"] == {"pos": 0.5}


def test_predictor_from_onnx_gives_the_checkpoint_s_results(onnx_export, capsys):
    checkpoint, out_dir = onnx_export
    torch_predictor, onnx_predictor = Predictor.from_checkpoint(checkpoint), Predictor.from_onnx(out_dir, batch_size=2)
    assert onnx_predictor.multitask and list(onnx_predictor.tasks) == list(HIERARCHY)
    assert onnx_predictor.labels == torch_predictor.labels and onnx_predictor.max_length == 32
    assert onnx_predictor.thresholds == {name: pytest.approx(t) for name, t in torch_predictor.thresholds.items()}
    with pytest.raises(HeadfitConfigError, match="several tasks"):
        onnx_predictor.task  # noqa: B018
    expected, got = torch_predictor.predict(TEXTS), onnx_predictor.predict(TEXTS)
    assert inconsistent(got) == 0  # consistent decoding, in the graph
    assert [{n: decided(r[n]) for n in r} for r in got] == [{n: decided(r[n]) for n in r} for r in expected]
    for name, probabilities in onnx_predictor.predict_proba(TEXTS).items():
        assert np.abs(probabilities - torch_predictor.predict_proba(TEXTS)[name]).max() <= 1e-4

    assert main([str(out_dir), *TEXTS[:2]]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [{n: decided(r[n]) for n in HIERARCHY} for r in records] == \
        [{n: decided(r[n]) for n in HIERARCHY} for r in expected[:2]]


def test_hf_export_refuses_several_tasks_and_points_to_onnx(checkpoints, tmp_path, capsys):
    with pytest.raises(HeadfitConfigError, match="2 tasks") as error:
        export(checkpoints["two"], "hf", tmp_path / "hf")
    assert "--format onnx" in error.value.fix and "one classifier" in str(error.value)
    assert export_main([str(checkpoints["two"]), "--format", "hf", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "--format onnx" in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_eval_refuses_several_tasks_and_says_what_to_do(checkpoints, tmp_path, capsys):
    from headfit.eval import main as eval_main

    path = write_rows(tmp_path / "new.csv", [{"text": "good", "label": "pos"}])
    assert eval_main([str(checkpoints["two"]), "--input", str(path), "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    err = err[err.index("headfit-eval:"):]
    assert "headfit-eval evaluates one-task models" in err and "['sentiment', 'topic']" in err
    assert "test/<task>/<metric>" in err and "Traceback" not in err
