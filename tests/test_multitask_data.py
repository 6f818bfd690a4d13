"""Several tasks on one text (issue #12, data): label columns per task, partial labels, derived coarse levels."""

import json

import pytest
import torch

from headfit import HeadfitConfigError, HeadfitDataError, TextClassificationDataModule

from conftest import write_rows

WORDS = ["good", "bad", "great", "awful", "fine", "movie", "film", "plot", "sports", "food"]
SENTIMENT = ["pos", "neg"] * 5
TOPICS = ["sports", "food", "sports,food", "weather", "food", "sports", "[]", "weather,food", "sports", "food"]
# GoEmotions-like: fine emotions grouped into a coarse sentiment; 'neutral' is in no group (it stays 'neutral')
EMOTIONS = ["joy", "amusement", "anger", "annoyance", "fear", "neutral", "joy", "anger", "neutral", "fear"]
GROUPS = {"positive": ["joy", "amusement"], "negative": ["anger", "annoyance", "fear"]}


def make(tmp_path, tiny_encoder, train, val="same", tasks=None, **options):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(train),
                                      val_path=str(train) if val == "same" else val and str(val), batch_size=4,
                                      cache_dir=str(tmp_path / "cache"), report_dir=str(tmp_path / "run"),
                                      tasks=tasks, **options)
    dm.setup("fit")
    return dm


def rows_of(dm, split, indices):
    return [{**dm.datasets[split][i], "index": i} for i in indices]


def skipped(tmp_path):
    return [json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_two_tasks_of_different_kinds_in_one_file(suffix, tmp_path, tiny_encoder, caplog):
    train = write_rows(tmp_path / f"train.{suffix}", [{"text": f"{w} {i}", "sentiment": s, "topics": t}
                                                      for i, (w, s, t) in enumerate(zip(WORDS, SENTIMENT, TOPICS))])
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, tasks={"sentiment": {"label_column": "sentiment"},
                                                    "topics": {"label_column": "topics"}})
    assert dm.multitask
    arguments = dm.task_arguments()
    assert arguments == {
        "sentiment": {"labels": ["neg", "pos"], "kind": "binary", "label_counts": [5, 5], "num_train_rows": 10,
                      "parent_of": None, "groups": None},
        "topics": {"labels": ["food", "sports", "weather"], "kind": "multilabel", "label_counts": [5, 4, 2],
                   "num_train_rows": 10, "parent_of": None, "groups": None}}
    assert "tasks.topics: multilabel with 3 labels" in caplog.text  # the kind's evidence, named by task
    assert "train/sentiment: 10 labelled rows" in caplog.text and "val/topics: 10 labelled rows" in caplog.text
    assert "train: 10 rows read = 10 used + 0 skipped" in caplog.text
    train_rows = dm.datasets["train"]
    assert train_rows["label_ids.topics"][:3] == [[1], [0], [0, 1]] and train_rows["label_ids.topics"][6] == []
    assert all(train_rows["labelled.topics"])
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["labels"]) == set(batch["labelled"]) == {"sentiment", "topics"}
    assert batch["labels"]["sentiment"].dtype == torch.long and batch["labels"]["sentiment"].shape == (4,)
    assert batch["labels"]["topics"].shape == (4, 3) and batch["labelled"]["topics"].dtype == torch.bool
    assert batch["input_ids"].shape[0] == len(batch["index"]) == 4
    with pytest.raises(HeadfitConfigError, match="several tasks") as error:
        dm.labels
    assert "task_arguments" in error.value.fix


def test_the_single_task_is_unchanged_and_has_no_task_arguments(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", [{"text": w, "label": s} for w, s in zip(WORDS, SENTIMENT)])
    dm = make(tmp_path, tiny_encoder, train, tasks={})
    assert not dm.multitask and dm.task_arguments() is None and dm.labels == ["neg", "pos"]
    batch = dm.collate(rows_of(dm, "train", range(3)))
    assert "labelled" not in batch and batch["labels"].tolist() == [1, 0, 1]


def partial_rows():
    """Topics for every row; sentiment for 6 of 10 (rows 2, 3, 6, 7 have none)."""
    return [{"text": f"{w} {i}", "sentiment": None if i in (2, 3, 6, 7) else s, "topics": t}
            for i, (w, s, t) in enumerate(zip(WORDS, SENTIMENT, TOPICS))]


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])  # csv: an empty cell; jsonl: null (and one key left out)
def test_missing_ignore_keeps_the_row_unlabelled_for_that_task(suffix, tmp_path, tiny_encoder, caplog):
    rows = partial_rows()
    if suffix == "jsonl":
        del rows[7]["sentiment"]
    train = write_rows(tmp_path / f"train.{suffix}", rows)
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, tasks={"sentiment": {"label_column": "sentiment", "missing": "ignore"},
                                                    "topics": {"label_column": "topics"}})
    assert "train: 10 rows read = 10 used + 0 skipped" in caplog.text
    assert ("train/sentiment: 6 labelled, 4 without a label (tasks.sentiment.missing=ignore)" in caplog.text)
    assert "train/topics: 10 labelled rows" in caplog.text
    data = dm.datasets["train"]
    assert data["labelled.sentiment"] == [i not in (2, 3, 6, 7) for i in range(10)]
    assert data["label_ids.sentiment"][2] == [] and data["label_ids.sentiment"][0] == [1]
    sentiment = dm.task_arguments()["sentiment"]
    assert sentiment["num_train_rows"] == 6 and sentiment["label_counts"] == [3, 3]  # neg: rows 1, 5, 9; pos: 0, 4, 8

    batch = dm.collate(rows_of(dm, "train", [2, 3, 6, 7]))  # no row with a sentiment label
    assert batch["labelled"]["sentiment"].tolist() == [False] * 4
    assert batch["labels"]["sentiment"].tolist() == [0] * 4  # placeholders, masked by `labelled`
    assert batch["labelled"]["topics"].tolist() == [True] * 4


def test_a_row_no_task_labels_is_a_missing_label_bad_row(tmp_path, tiny_encoder, caplog):
    rows = partial_rows()
    rows[3]["topics"] = ""
    train = write_rows(tmp_path / "train.csv", rows)
    tasks = {"sentiment": {"label_column": "sentiment", "missing": "ignore"},
             "topics": {"label_column": "topics", "missing": "ignore"}}
    with pytest.raises(HeadfitDataError, match="no task has a label for this row") as error:
        make(tmp_path, tiny_encoder, train, tasks=tasks)
    assert error.value.where == f"{train}:5"
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, tasks=tasks, on_bad_row="skip")
    assert "train: 10 rows read = 9 used + 1 skipped (missing label: 1)" in caplog.text
    assert len(dm.datasets["train"]) == 9
    assert [(r["where"], r["reason"]) for r in skipped(tmp_path) if r["split"] == "train"] == [
        (f"{train}:5", "missing label")]


def test_missing_error_names_the_file_line_and_the_task(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", partial_rows())
    tasks = {"topics": {"label_column": "topics"}, "sentiment": {"label_column": "sentiment"}}
    with pytest.raises(HeadfitDataError) as error:  # in train: found while the labels are read
        make(tmp_path, tiny_encoder, train, tasks=tasks)
    assert error.value.where == f"{train}:4, column 'sentiment'"
    assert error.value.problem.startswith("tasks.sentiment: the label is missing")
    assert "tasks.sentiment.missing=ignore" in error.value.fix
    complete = write_rows(tmp_path / "complete.csv", [{**row, "sentiment": row["sentiment"] or "pos"}
                                                      for row in partial_rows()])
    with pytest.raises(HeadfitDataError) as error:  # in validation: found by the row check
        make(tmp_path, tiny_encoder, complete, train, tasks=tasks)
    assert error.value.where == f"{train}:4, column 'sentiment'"
    assert error.value.problem.startswith("tasks.sentiment: the label is missing")
    assert "tasks.sentiment.missing=ignore" in error.value.fix and "data.on_bad_row=skip" in error.value.fix
    val = write_rows(tmp_path / "val.csv", [{"text": "fine", "sentiment": "pos", "topics": "opera"}])
    with pytest.raises(HeadfitDataError, match="never occurs in the training data") as error:
        make(tmp_path, tiny_encoder, complete, val, tasks=tasks)
    assert error.value.where == f"{val}:2, column 'topics'" and error.value.problem.startswith("tasks.topics: ")
    assert "tasks.topics.labels" in error.value.fix


def test_skipped_rows_name_the_task(tmp_path, tiny_encoder, caplog):
    train = write_rows(tmp_path / "train.csv", partial_rows())
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, None, on_bad_row="skip", val_fraction=0.2,
              tasks={"sentiment": {"label_column": "sentiment"}, "topics": {"label_column": "topics"}})
    assert "train: 10 rows read = 6 used + 4 skipped (missing label: 4)" in caplog.text
    assert all(r["message"].startswith("tasks.sentiment: ") for r in skipped(tmp_path))
    assert "stratified by tasks.sentiment" in caplog.text
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 6
    assert sorted(ids for row in dm.datasets["val"]["label_ids.sentiment"] for ids in row) == [0, 1]


def expected_parents(emotions, groups):
    return [sorted(i for i, children in enumerate(groups.values()) if any(e in children for e in row))
            for row in emotions]


@pytest.mark.parametrize("form", ["json", "yaml", "inline"])
def test_a_derived_task_of_a_multilabel_child_unions_the_groups(form, tmp_path, tiny_encoder, caplog):
    emotions = [[EMOTIONS[i], EMOTIONS[(i + 3) % 10]] if i % 3 else [EMOTIONS[i]] for i in range(10)]
    train = write_rows(tmp_path / "train.jsonl", [{"text": f"{w} {i}", "emotions": e}
                                                  for i, (w, e) in enumerate(zip(WORDS, emotions))])
    groups = {**GROUPS, "negative": [*GROUPS["negative"], "joy"]}  # 'joy' in two groups of a multilabel child
    if form == "json":
        (tmp_path / "groups.json").write_text(json.dumps(groups))
        groups = str(tmp_path / "groups.json")
    elif form == "yaml":
        (tmp_path / "groups.yaml").write_text("".join(f"{p}: [{', '.join(c)}]\n" for p, c in groups.items()))
        groups = str(tmp_path / "groups.yaml")
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, tasks={"emotion": {"label_column": "emotions"},
                                                    "sentiment": {"parent_of": "emotion", "groups": groups}})
    sentiment = dm.task_arguments()["sentiment"]
    resolved = {**GROUPS, "negative": [*GROUPS["negative"], "joy"], "neutral": ["neutral"]}
    assert sentiment["kind"] == "multilabel" and sentiment["labels"] == ["positive", "negative", "neutral"]
    assert sentiment["groups"] == resolved and sentiment["parent_of"] == "emotion"
    assert "labels of tasks.emotion in no group map to the parent label of the same name: ['neutral']" in caplog.text
    assert dm.datasets["train"]["label_ids.sentiment"] == expected_parents(emotions, resolved)
    assert sentiment["label_counts"] == [sum(i in ids for ids in expected_parents(emotions, resolved))
                                         for i in range(3)]
    batch = dm.collate(rows_of(dm, "train", range(4)))
    assert batch["labels"]["sentiment"].shape == (4, 3)


def test_a_derived_task_of_a_single_label_child_is_single_label_and_missing_where_the_child_is(
        tmp_path, tiny_encoder, caplog):
    rows = [{"text": f"{w} {i}", "emotion": None if i == 4 else e, "topics": t}
            for i, (w, e, t) in enumerate(zip(WORDS, EMOTIONS, TOPICS))]
    train = write_rows(tmp_path / "train.csv", rows)
    caplog.set_level("INFO")
    tasks = {"topics": {"label_column": "topics"}, "emotion": {"label_column": "emotion", "missing": "ignore"},
             "sentiment": {"parent_of": "emotion", "groups": GROUPS},
             "polarity": {"parent_of": "sentiment", "groups": {"polar": ["positive", "negative"]}}}  # a chain
    dm = make(tmp_path, tiny_encoder, train, tasks=tasks)
    arguments = dm.task_arguments()
    assert arguments["sentiment"]["kind"] == "multiclass"
    assert arguments["sentiment"]["labels"] == ["positive", "negative", "neutral"]
    assert arguments["polarity"]["kind"] == "binary" and arguments["polarity"]["labels"] == ["polar", "neutral"]
    data = dm.datasets["train"]
    assert data["label_ids.sentiment"] == [[0], [0], [1], [1], [], [2], [0], [1], [2], [1]]
    assert data["label_ids.polarity"] == [[0], [0], [0], [0], [], [1], [0], [0], [1], [0]]
    assert data["labelled.sentiment"][4] is False and data["labelled.polarity"][4] is False
    assert "train/sentiment: 9 labelled, 1 without a label (no tasks.emotion label to group)" in caplog.text
    batch = dm.collate(rows_of(dm, "train", [3, 4]))
    assert batch["labels"]["sentiment"].tolist() == [1, 0] and batch["labelled"]["sentiment"].tolist() == [True, False]
    # a child label in two groups would give a row of a single-label child two parent labels
    tasks["sentiment"] = {"parent_of": "emotion", "groups": {**GROUPS, "negative": [*GROUPS["negative"], "joy"]}}
    with pytest.raises(HeadfitConfigError, match="'joy' is in 2 groups") as error:
        make(tmp_path, tiny_encoder, train, tasks=tasks)
    assert "tasks.sentiment.kind=multilabel" in error.value.fix


def test_groups_naming_an_unknown_child_label_name_the_label_file_and_key(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", [{"text": f"{w} {i}", "emotion": e}
                                                for i, (w, e) in enumerate(zip(WORDS, EMOTIONS))])
    path = tmp_path / "ekman.json"
    path.write_text(json.dumps({**GROUPS, "surprise": ["surprise", "curiosity"]}))
    with pytest.raises(HeadfitConfigError, match="'surprise', which is not a label of tasks.emotion") as error:
        make(tmp_path, tiny_encoder, train, tasks={"emotion": {"label_column": "emotion"},
                                                   "ekman": {"parent_of": "emotion", "groups": str(path)}})
    assert str(path) in error.value.where and "tasks.ekman.groups" in error.value.where


@pytest.mark.parametrize(("tasks", "where"), [
    ({"emotion": {"label_column": "e", "head": "sigmoid"}}, "tasks.emotion.head"),
    ({"emotion": {"label_column": "e", "missing": "sometimes"}}, "tasks.emotion.missing"),
    ({"bad-name": {"label_column": "e"}}, "tasks.bad-name"),
    ({"emotion": {}}, "tasks.emotion.label_column"),
    ({"emotion": {"label_column": "e", "label_columns": ["a", "b"]}}, "tasks.emotion.label_columns"),
    ({"emotion": {"label_column": "e"}, "ekman": {"parent_of": "emotion"}}, "tasks.ekman.groups"),
    ({"emotion": {"label_column": "e", "groups": GROUPS}}, "tasks.emotion.parent_of"),
    ({"emotion": {"label_column": "e"}, "ekman": {"parent_of": "emotions", "groups": GROUPS}}, "tasks.ekman.parent_of"),
    ({"emotion": {"label_column": "e"}, "ekman": {"parent_of": "emotion", "groups": GROUPS, "missing": "ignore"}},
     "tasks.ekman.missing"),
    ({"a": {"parent_of": "b", "groups": GROUPS}, "b": {"parent_of": "a", "groups": GROUPS}}, "tasks.a.parent_of"),
    ({"emotion": {"label_column": "e", "label_delimiter": ""}}, "tasks.emotion.label_delimiter"),
    ({"emotion": {"label_column": "e", "num_labels": 0}}, "tasks.emotion.num_labels"),
])
def test_bad_task_settings_are_refused_naming_the_key(tasks, where, tmp_path, tiny_encoder):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(tmp_path / "absent.csv"), tasks=tasks)
    with pytest.raises(HeadfitConfigError) as error:  # before any file is read
        dm.setup("fit")
    assert error.value.where == where


def test_top_level_label_settings_are_refused_with_tasks(tmp_path, tiny_encoder):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(tmp_path / "absent.csv"),
                                      tasks={"emotion": {"label_column": "e"}}, labels=["a", "b"])
    with pytest.raises(HeadfitConfigError, match="task.labels is set") as error:
        dm.setup("fit")
    assert "tasks.<name>.labels" in error.value.fix


def test_task_keys_in_messages_and_omegaconf_tasks(tmp_path, tiny_encoder):
    from omegaconf import OmegaConf
    train = write_rows(tmp_path / "train.csv", [{"text": w, "sentiment": s, "stars": i % 3 + 1}
                                                for i, (w, s) in enumerate(zip(WORDS, SENTIMENT))])
    tasks = OmegaConf.create({"sentiment": {"label_column": "sentiment", "kind": "binary"},
                              "stars": {"label_column": "stars", "kind": "binary"}})
    with pytest.raises(HeadfitConfigError, match="tasks.stars.kind=binary needs exactly 2 labels") as error:
        make(tmp_path, tiny_encoder, train, tasks=tasks)
    assert error.value.where == "tasks.stars.kind"
    with pytest.raises(HeadfitConfigError) as error:
        make(tmp_path, tiny_encoder, train, tasks={"stars": {"label_column": "rating"}})
    assert error.value.where == "tasks.stars.label_column" and "no column 'rating'" in error.value.problem


def test_max_train_rows_with_tasks(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", partial_rows())
    dm = make(tmp_path, tiny_encoder, train, max_train_rows=5,
              tasks={"sentiment": {"label_column": "sentiment", "missing": "ignore"},
                     "topics": {"label_column": "topics"}})
    assert len(dm.datasets["train"]) == 5
    assert dm.task_arguments()["topics"]["num_train_rows"] == 5
    assert dm.task_arguments()["sentiment"]["num_train_rows"] == sum(dm.datasets["train"]["labelled.sentiment"])


def test_tasks_from_parquet_with_a_class_label_column(tmp_path, tiny_encoder):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    features = Features({"text": Value("string"), "sentiment": ClassLabel(names=["negative", "positive"]),
                         "topics": Sequence(Value("string"))})
    data = Dataset.from_dict({"text": [f"{w} {i}" for i, w in enumerate(WORDS)],
                              "sentiment": [int(s == "pos") for s in SENTIMENT],
                              "topics": [t.split(",") if t != "[]" else [] for t in TOPICS]}, features=features)
    data.to_parquet(str(tmp_path / "train.parquet"))
    dm = make(tmp_path, tiny_encoder, tmp_path / "train.parquet",
              tasks={"sentiment": {"label_column": "sentiment"}, "topics": {"label_column": "topics"}})
    arguments = dm.task_arguments()
    assert arguments["sentiment"]["labels"] == ["negative", "positive"]  # the ClassLabel's names
    assert arguments["topics"]["kind"] == "multilabel" and dm.datasets["train"]["label_ids.topics"][2] == [0, 1]


def test_a_jsonl_key_no_row_has_is_refused_unless_rows_may_lack_it(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.jsonl", [{"text": w, "sentiment": s} for w, s in zip(WORDS, SENTIMENT)])
    with pytest.raises(HeadfitConfigError, match="has no key 'topics'") as error:
        make(tmp_path, tiny_encoder, train, tasks={"sentiment": {"label_column": "sentiment"},
                                                   "topics": {"label_column": "topics"}})
    assert error.value.where == "tasks.topics.label_column"
    with pytest.raises(HeadfitDataError, match="no training row has a readable label for task topics") as error:
        make(tmp_path, tiny_encoder, train, tasks={"sentiment": {"label_column": "sentiment"},
                                                   "topics": {"label_column": "topics", "missing": "ignore"}})
    assert error.value.where == "tasks.topics.label_column"


def test_label_columns_per_task_and_a_parent_with_its_own_column(tmp_path, tiny_encoder):
    rows = [{"text": f"{w} {i}", "sports": int("sports" in t), "food": int("food" in t), "emotion": e,
             "sentiment": {"joy": "positive", "amusement": "positive", "neutral": "neutral"}.get(e, "negative")}
            for i, (w, t, e) in enumerate(zip(WORDS, TOPICS, EMOTIONS))]
    train = write_rows(tmp_path / "train.csv", rows)
    tasks = {"topics": {"label_columns": ["sports", "food"]}, "emotion": {"label_column": "emotion"},
             "sentiment": {"label_column": "sentiment", "parent_of": "emotion", "groups": GROUPS}}
    dm = make(tmp_path, tiny_encoder, train, tasks=tasks)
    arguments = dm.task_arguments()
    assert arguments["topics"]["labels"] == ["sports", "food"] and arguments["topics"]["kind"] == "multilabel"
    assert dm.datasets["train"]["label_ids.topics"][2] == [0, 1]
    sentiment = arguments["sentiment"]  # read from its own column; the groups serve decoding
    assert sentiment["labels"] == ["negative", "neutral", "positive"] and sentiment["kind"] == "multiclass"
    assert sentiment["groups"] == {**GROUPS, "neutral": ["neutral"]}
    tasks["sentiment"]["groups"] = {**GROUPS, "mixed": []}
    with pytest.raises(HeadfitConfigError, match="groups into 'mixed', which is not a label of tasks.sentiment"):
        make(tmp_path, tiny_encoder, train, tasks=tasks)
