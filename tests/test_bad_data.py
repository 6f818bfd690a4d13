"""Bad input (issue #11, data): each kind is refused in words naming the file:line or key, or counted as a
skipped row; none is trained on silently, and rows read always equals the file's own data lines."""

import json

import pytest

from headfit import HeadfitConfigError, HeadfitDataError, TextClassificationDataModule

from conftest import write_rows

WORDS = ["good", "bad", "great", "awful", "fine", "movie", "film", "plot"]


def make(tmp_path, tiny_encoder, train, val=None, test=None, **options):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(train), val_path=val and str(val),
                                      test_path=test and str(test), batch_size=4, cache_dir=str(tmp_path / "cache"),
                                      report_dir=str(tmp_path / "run"), **options)
    dm.setup("fit")
    return dm


def sentiment_lines(n):
    return [f"{WORDS[i % 8]} {WORDS[(i // 8) % 8]} {i},{'pos' if i % 2 else 'neg'}" for i in range(n)]


def skipped(tmp_path, split="train"):
    rows = [json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()]
    return [(row["where"], row["reason"]) for row in rows if row["split"] == split]


# ---- 1. a stray quote is one bad row, not the rest of the file ---------------------------------------------

@pytest.mark.parametrize("stray", [
    '"{} that never closes,pos',           # opens in the text field, runs to the end of the file
    '{},"pos',                             # opens in the label field
])
@pytest.mark.parametrize("closes_later", [False, True])
def test_a_stray_quote_is_one_bad_row_and_reading_resumes(stray, closes_later, tmp_path, tiny_encoder, caplog):
    lines = sentiment_lines(120)
    lines[10] = stray.format("oops")  # file line 12 (after the header)
    if closes_later:  # another stray quote 30 lines on would close it, with the wrong number of fields
        lines[40] = 'bad" film,neg'
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    caplog.set_level("INFO", logger="headfit.data.checks")
    dm = make(tmp_path, tiny_encoder, path, path, on_bad_row="skip")
    assert "train: 120 rows read = 119 used + 1 skipped (unparsable line: 1)" in caplog.text
    assert len(dm.datasets["train"]) == 119
    assert skipped(tmp_path) == [(f"{path}:12", "unparsable line")]
    with pytest.raises(HeadfitDataError, match="stray quote") as error:
        make(tmp_path, tiny_encoder, path, path)
    assert error.value.where == f"{path}:12"


def test_a_quote_left_open_past_the_line_limit_resumes_after_it(tmp_path, tiny_encoder, caplog):
    lines = sentiment_lines(30)
    lines[3] = '"oops,pos'
    lines[20] = 'bad" film and more,neg'  # would close it 17 lines on, as a 2-field row: too long to be real
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    caplog.set_level("INFO", logger="headfit.data.checks")
    make(tmp_path, tiny_encoder, path, path, on_bad_row="skip", max_record_lines=5)
    assert "train: 30 rows read = 29 used + 1 skipped" in caplog.text
    assert skipped(tmp_path) == [(f"{path}:5", "unparsable line")]
    with pytest.raises(HeadfitDataError, match="still open 5 lines later") as error:
        make(tmp_path, tiny_encoder, path, path, max_record_lines=5)
    assert "data.max_record_lines" in error.value.problem


def test_real_multiline_fields_and_quotes_inside_unquoted_fields_still_read(tmp_path, tiny_encoder):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"a film\nover\nthree lines",pos\nthe "good" film,pos\nbad,neg\n'
                    '"an ""awful"" plot",neg\n')
    dm = make(tmp_path, tiny_encoder, path, path)
    assert dm.datasets["train"]["text"] == ["a film\nover\nthree lines", 'the "good" film', "bad", 'an "awful" plot']
    assert dm.datasets["train"]["line"] == [2, 5, 6, 7]


# ---- 2. indices and names mixed in one label column --------------------------------------------------------

def test_mixed_indices_and_names_are_refused_naming_a_row_of_each(tmp_path, tiny_encoder):
    rows = [{"text": w, "label": label} for w, label in zip(WORDS, [1, 0, "pos", "neg", 1, 0, "pos", "neg"])]
    train = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(HeadfitDataError, match="mixes indices and names") as error:
        make(tmp_path, tiny_encoder, train, train)
    assert f"{train}:1" in error.value.problem and f"{train}:3" in error.value.problem
    assert "task.labels" in error.value.fix and "data.labels_file" in error.value.fix
    # With the names given, an index and a name of the same label both map: that is not ambiguous.
    dm = make(tmp_path, tiny_encoder, train, train, labels=["neg", "pos"])
    assert dm.datasets["train"]["label_ids"][:4] == [[1], [0], [1], [0]]


@pytest.mark.parametrize("values", [[1, 2, 3, 4, 5], ["1", "5", "3", "2", "4"]])
def test_numeric_names_such_as_stars_are_still_names(values, tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.jsonl", [{"text": w, "label": v} for w, v in zip(WORDS, values * 2)])
    assert make(tmp_path, tiny_encoder, train, train).labels == ["1", "2", "3", "4", "5"]


# ---- 3. 0/1 vectors of another width ----------------------------------------------------------------------

def test_a_multi_hot_vector_of_another_width_is_named(tmp_path, tiny_encoder, caplog):
    labels = [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 0]]
    train = write_rows(tmp_path / "train.jsonl", [{"text": w, "label": v} for w, v in zip(WORDS, labels)])
    with pytest.raises(HeadfitDataError, match="has 4 entries where 7 of 8 training rows") as error:
        make(tmp_path, tiny_encoder, train, train)
    assert error.value.where == f"{train}:5, column 'label'"
    caplog.set_level("INFO", logger="headfit.data.checks")
    dm = make(tmp_path, tiny_encoder, train, train, on_bad_row="skip")
    assert dm.kind == "multilabel" and dm.labels == ["0", "1", "2"]
    assert "train: 8 rows read = 7 used + 1 skipped (unreadable label: 1)" in caplog.text


def test_index_lists_of_two_labels_are_not_taken_for_vectors(tmp_path, tiny_encoder):
    labels = [[0], [1], [0, 1], [], [1], [0], [0, 1], [1]]
    train = write_rows(tmp_path / "train.jsonl", [{"text": w, "label": v} for w, v in zip(WORDS, labels)])
    dm = make(tmp_path, tiny_encoder, train, train)
    assert dm.kind == "multilabel" and dm.datasets["train"]["label_ids"][:4] == [[0], [1], [0, 1], []]


def test_a_one_hot_row_with_two_ones_under_multiclass_is_named(tmp_path, tiny_encoder):
    labels = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    train = write_rows(tmp_path / "train.jsonl", [{"text": w, "label": v} for w, v in zip(WORDS, labels)])
    with pytest.raises(HeadfitDataError, match="has 2 ones") as error:
        make(tmp_path, tiny_encoder, train, train, kind="multiclass")
    assert error.value.where == f"{train}:4, column 'label'" and "task.kind=multilabel" in error.value.fix


# ---- 4. two columns of one name ---------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["csv", "tsv"])
def test_two_columns_with_one_header_name_are_refused_naming_both(suffix, tmp_path, tiny_encoder):
    sep = "," if suffix == "csv" else "\t"
    path = tmp_path / f"train.{suffix}"
    path.write_text(sep.join(["text", "label", "text"]) + "\n" +
                    "".join(sep.join([w, "pos" if i % 2 else "neg", f"other {w}"]) + "\n" for i, w in enumerate(WORDS)))
    with pytest.raises(HeadfitConfigError, match="2 columns named 'text', at 0-based positions 0, 2") as error:
        make(tmp_path, tiny_encoder, path, path)
    assert error.value.where == "data.text_column" and "data.text_column=0" in error.value.fix
    assert make(tmp_path, tiny_encoder, path, path, text_column=2).datasets["train"]["text"][0] == "other good"


def test_a_jsonl_object_with_a_key_twice_is_a_bad_row(tmp_path, tiny_encoder):
    path = write_rows(tmp_path / "train.jsonl", [{"text": w, "label": "pos" if i % 2 else "neg"}
                                                 for i, w in enumerate(WORDS)])
    lines = path.read_text().splitlines()
    lines[2] = '{"text": "great", "label": "pos", "label": "neg"}'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HeadfitDataError, match="'label' occurs more than once") as error:
        make(tmp_path, tiny_encoder, path, path)
    assert error.value.where == f"{path}:3"


# ---- 5. a label that validation or test lacks -------------------------------------------------------------

def test_a_label_absent_from_validation_or_test_is_warned_with_counts(tmp_path, tiny_encoder, caplog):
    rows = [{"text": f"{w} {i}", "label": ["a", "b", "c"][i % 3]} for i, w in enumerate(WORDS * 3)]
    train = write_rows(tmp_path / "train.csv", rows)
    val = write_rows(tmp_path / "val.csv", [r for r in rows if r["label"] != "c"])
    test = write_rows(tmp_path / "test.csv", [r for r in rows if r["label"] == "a"])
    caplog.set_level("WARNING")
    make(tmp_path, tiny_encoder, train, val, test)
    assert "val: 1 of 3 labels have no rows here: 'c' (train 8, val 0, test 0)" in caplog.text
    assert "test: 2 of 3 labels have no rows here: 'b' (train 8, val 8, test 0); 'c' (train 8, val 0, test 0)" \
        in caplog.text


@pytest.mark.parametrize("multilabel", [False, True])
def test_the_held_out_split_keeps_every_label_with_two_training_rows(multilabel, tmp_path, tiny_encoder, caplog):
    # 40 rows of a, 3 of b, 2 of c, 1 of d: 10% would hold out no b and no c
    labels = ["a"] * 40 + ["b"] * 3 + ["c"] * 2 + ["d"]
    if multilabel:  # c is never a row's rarest label: it always comes with d or b
        labels = ["a"] * 40 + ["b"] * 2 + ["b,c", "c,d", "d"]
    rows = [{"text": f"{WORDS[i % 8]} {i}", "label": label} for i, label in enumerate(labels)]
    train = write_rows(tmp_path / "train.csv", rows)
    caplog.set_level("WARNING")
    dm = make(tmp_path, tiny_encoder, train, val_fraction=0.1, seed=0)
    for split in ("train", "val"):
        counts = dict(zip(dm.labels, dm.label_space.counts(dm.datasets[split]["label_ids"])))
        assert all(counts[label] >= 1 for label in ("a", "b", "c")), (split, counts)
    if not multilabel:
        assert "val: 1 of 4 labels have no rows here: 'd' (train 1, val 0)" in caplog.text
        assert "holds out a row of every label with at least 2 training rows" in caplog.text
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == len(rows)


# ---- 6. data.* arguments, before any file is read ---------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("max_length", 0), ("max_length", -5), ("max_length", 12.5), ("max_length", "128"), ("max_length", True),
    ("batch_size", 0), ("batch_size", 2.0), ("eval_batch_size", 0), ("max_train_rows", 0),
    ("val_fraction", 0), ("val_fraction", 1.5), ("val_fraction", "0.1"), ("on_bad_row", "ignore"),
    ("num_workers", -1), ("header", "yes"), ("label_delimiter", ""), ("encoding", "no-such-codec"),
    ("max_record_lines", 0),
])
def test_each_bad_data_argument_is_refused_up_front_naming_its_key(key, value, tmp_path, tiny_encoder):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(tmp_path / "absent.csv"), **{key: value})
    with pytest.raises(HeadfitConfigError) as error:  # the file does not exist: nothing is read first
        dm.setup("fit")
    assert f"data.{key}" in error.value.where


def test_max_length_zero_stops_the_cli_run(tmp_path, tiny_encoder):
    from test_train import config

    from headfit.train import train
    with pytest.raises(HeadfitConfigError, match="data.max_length=0"):
        train(config(tmp_path, tiny_encoder, "data.max_length=0"))
    assert not (tmp_path / "checkpoints").exists()


# ---- 7. files that used to end in a traceback -------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_file_with_a_header_and_no_rows_is_refused(split, tmp_path, tiny_encoder):
    good = write_rows(tmp_path / "good.csv", [{"text": w, "label": "pos" if i % 2 else "neg"}
                                              for i, w in enumerate(WORDS)])
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n\n")
    paths = {"train": good, "val": good, "test": None, split: empty}
    with pytest.raises(HeadfitDataError, match="has no rows") as error:
        make(tmp_path, tiny_encoder, paths["train"], paths["val"], paths["test"])
    assert error.value.where == f"data.{split}_path"


def test_a_split_whose_rows_are_all_bad_is_refused(tmp_path, tiny_encoder):
    good = write_rows(tmp_path / "good.csv", [{"text": w, "label": "pos" if i % 2 else "neg"}
                                              for i, w in enumerate(WORDS)])
    val = write_rows(tmp_path / "val.csv", [{"text": "", "label": "pos"}, {"text": "fine", "label": ""}])
    with pytest.raises(HeadfitDataError, match="all 2 rows of .* are bad"):
        make(tmp_path, tiny_encoder, good, val, on_bad_row="skip")


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_bytes_that_are_not_utf8_name_line_and_offset_and_data_encoding_reads_them(suffix, tmp_path, tiny_encoder):
    rows = [{"text": w, "label": "pos" if i % 2 else "neg"} for i, w in enumerate(WORDS)]
    rows[4]["text"] = "café film"
    path = write_rows(tmp_path / f"train.{suffix}", rows)
    content = path.read_text(encoding="utf-8")
    if suffix == "jsonl":
        content = content.replace("caf\\u00e9", "café")
    path.write_bytes(content.encode("cp1252"))
    with pytest.raises(HeadfitDataError, match="not utf-8 text") as error:
        make(tmp_path, tiny_encoder, path, path)
    line = 6 if suffix == "csv" else 5
    offset = content.index("é")  # all ASCII before it: characters = bytes
    assert error.value.where == f"{path}:{line}, byte offset {offset}"
    assert "data.encoding" in error.value.fix
    dm = make(tmp_path, tiny_encoder, path, path, encoding="cp1252")
    assert "café film" in dm.datasets["train"]["text"]


def test_a_read_stopped_by_bad_bytes_leaves_nothing_in_the_cache(tmp_path, tiny_encoder):
    rows = [{"text": f"{WORDS[i % 8]} film {i}", "label": ["pos", "neg"][i % 2]} for i in range(1500)]
    rows[1400]["text"] = "café film"  # past what is read up front (the header's buffer): found while writing Arrow
    path = write_rows(tmp_path / "train.csv", rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode("cp1252"))
    with pytest.raises(HeadfitDataError, match="not utf-8 text"):
        make(tmp_path, tiny_encoder, path, path)
    assert list((tmp_path / "cache" / "raw").iterdir()) == []


def test_the_demo_data_module_still_reads(tmp_path, tiny_encoder):
    from headfit.data import demo_datamodule
    dm = demo_datamodule(tmp_path / "demo", tokenizer=tiny_encoder, max_length=32, batch_size=8,
                         cache_dir=str(tmp_path / "cache"), report_dir=str(tmp_path / "run"))
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 400 and len(dm.labels) == 4


def test_an_unreadable_line_is_named_before_the_labels_are_judged(tmp_path, tiny_encoder):
    # the stray quote on line 2 hides the only 'pos' row: the error must name that line, not 'a single class'
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"a good film,pos\nbad,neg\nawful,neg\n')
    with pytest.raises(HeadfitDataError, match="never closes") as error:
        make(tmp_path, tiny_encoder, path)
    assert error.value.where == f"{path}:2"


# ---- the same rows, lines and errors when two processes read and check a file (data.num_proc=2) -----------

def two_shares(path, quiet_lines):
    from headfit.data import files

    shares = files.shares(path, 2, "utf-8", quiet_lines)
    assert len(shares) == 2, "the file must really be read in two shares"
    return shares


def test_two_processes_read_and_check_the_rows_one_reads(tmp_path, tiny_encoder, caplog):
    lines = sentiment_lines(80)
    lines[5] = '"a quoted text\nover two lines",pos'  # first share: one row of two lines
    lines[60] = ",neg"                                # second share: an empty text, file line 63
    lines[70] = '"oops that never closes,pos'         # second share: a stray quote, file line 73
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    second = two_shares(path, quiet_lines=3)[1]
    assert second.line < 63
    caplog.set_level("INFO", logger="headfit.data.checks")
    rows = {}
    for num_proc in (1, 2):
        caplog.clear()
        dm = make(tmp_path / f"p{num_proc}", tiny_encoder, path, path, on_bad_row="skip", max_record_lines=3,
                  num_proc=num_proc)
        assert "train: 80 rows read = 78 used + 2 skipped (empty text: 1, unparsable line: 1)" in caplog.text
        assert skipped(tmp_path / f"p{num_proc}") == [(f"{path}:63", "empty text"), (f"{path}:73", "unparsable line")]
        rows[num_proc] = dm.datasets["train"].select_columns(["line", "text", "input_ids"]).to_list()
    assert rows[2] == rows[1]
    with pytest.raises(HeadfitDataError, match="stray quote") as error:  # error: the first unreadable line
        make(tmp_path / "error", tiny_encoder, path, path, max_record_lines=3, num_proc=2)
    assert error.value.where == f"{path}:73"


def test_two_processes_name_the_line_of_a_bad_label_in_the_second_half(tmp_path, tiny_encoder):
    rows = [{"text": f"{WORDS[i % 8]} film {i}", "label": ["pos", "neg"][i % 2]} for i in range(60)]
    rows[50]["label"] = "maybe"  # unknown in validation (it never occurs in training): file line 51
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    write_rows(train, [row for i, row in enumerate(rows) if i != 50], "jsonl")
    write_rows(val, rows, "jsonl")
    two_shares(val, quiet_lines=0)
    with pytest.raises(HeadfitDataError, match="maybe") as error:
        make(tmp_path, tiny_encoder, train, val, num_proc=2)
    assert error.value.where == f"{val}:51, column 'label'"
