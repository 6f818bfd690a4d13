"""Data loading: sources and layouts, bad rows, splits, length-grouped batches, the token cache."""

import json
import sys

import pyarrow.compute as pc
import pytest
import pytorch_lightning as pl
import torch
from datasets import Dataset

from headfit import ClassifierModule, HeadfitConfigError, HeadfitDataError, TextClassificationDataModule
from headfit.data.datamodule import repeated_texts
from headfit.data.memory import release_pages
from headfit.data.sampler import LengthGroupedSampler
from headfit.predict import in_input_order

from conftest import write_rows

TEXTS = ["the movie was good", "an awful plot", "this film is great", "bad", "a fine film that was very good",
         "not good", "it was great", "the plot was awful and bad", "good", "a bad film"]
SENTIMENT = ["pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg", "pos", "neg"]


def make(tmp_path, tiny_encoder, train, val=None, test=None, **options):
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(train), val_path=val and str(val),
                                      test_path=test and str(test), batch_size=4, cache_dir=str(tmp_path / "cache"),
                                      report_dir=str(tmp_path / "run"), **options)
    dm.setup("fit")
    return dm


def texts_of(dm, split):
    return dm.datasets[split]["text"]


def test_csv_with_bom_crlf_and_quoted_newlines_keeps_line_numbers(tmp_path, tiny_encoder):
    path = tmp_path / "train.csv"
    content = 'text,label\r\n"good, very good",pos\r\n"a film\r\nthat was bad",neg\r\n,pos\r\nfine,pos\r\nbad,neg\r\n'
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    with pytest.raises(HeadfitDataError) as error:
        make(tmp_path, tiny_encoder, path, path)
    assert error.value.where == f"{path}:5, column 'text'"  # the empty text, after a 2-line quoted field
    dm = make(tmp_path, tiny_encoder, path, path, on_bad_row="skip")
    assert texts_of(dm, "train")[:2] == ["good, very good", "a film\r\nthat was bad"]


def test_no_header_columns_by_position_tsv(tmp_path, tiny_encoder):
    path = tmp_path / "train.tsv"
    path.write_text("".join(f"{text}\t{label}\tid{i}\n" for i, (text, label) in enumerate(zip(TEXTS, SENTIMENT))))
    dm = make(tmp_path, tiny_encoder, path, path, header=False, text_column=0, label_column=1)
    assert dm.labels == ["neg", "pos"] and len(dm.datasets["train"]) == 10
    with pytest.raises(HeadfitConfigError, match="must be a position 0..2") as error:
        make(tmp_path, tiny_encoder, path, path, header=False, text_column="text", label_column=1)
    assert error.value.where == "data.text_column"


def test_parquet_and_save_to_disk_folder(tmp_path, tiny_encoder):
    data = Dataset.from_dict({"sentence": TEXTS, "tags": [[i % 3] if i % 4 else [0, 2] for i in range(10)]})
    data.to_parquet(str(tmp_path / "train.parquet"))
    data.save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "train.parquet", tmp_path / "saved"):
        dm = make(tmp_path, tiny_encoder, source, source, text_column="sentence", label_column="tags")
        assert dm.kind == "multilabel" and dm.labels == ["0", "1", "2"]
        assert dm.datasets["train"]["label_ids"][0] == [0, 2]


def test_per_split_columns_text_pairs_and_labels_file(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.tsv", [{"label": i % 2, "sentence": t, "other": "x"}
                                                for i, t in enumerate(TEXTS)])
    dev = write_rows(tmp_path / "dev.tsv", [{"label": i % 2, "content": t, "other": "y"}
                                            for i, t in enumerate(TEXTS[:4])])
    names = tmp_path / "labels.txt"
    names.write_text("negative\npositive")
    dm = make(tmp_path, tiny_encoder, train, dev, text_column="sentence", val_text_column="content",
              text_pair_column="other", labels_file=str(names))
    assert dm.labels == ["negative", "positive"]
    row = dm.datasets["val"][0]
    assert 1 in row["token_type_ids"]  # the pair was encoded as a second segment
    assert row["text"] == TEXTS[0]


def test_several_label_columns(tmp_path, tiny_encoder):
    rows = [{"text": t, "joy": int(i % 2 == 0), "anger": int(i % 3 == 0)} for i, t in enumerate(TEXTS)]
    train = write_rows(tmp_path / "train.csv", rows)
    dm = make(tmp_path, tiny_encoder, train, train, label_columns=["joy", "anger"])
    assert dm.kind == "multilabel" and dm.labels == ["joy", "anger"]
    assert dm.datasets["train"]["label_ids"][:2] == [[0, 1], []]


BAD_ROWS = {
    "empty text": ({"text": "   ", "label": "pos"}, "the text is empty", "'text'"),
    "missing label": ({"text": "fine", "label": ""}, "the label is missing", "'label'"),
    "unknown label": ({"text": "fine", "label": "meh"}, "'meh' is not one of the 2 labels", "'label'"),
    "unreadable label": ({"text": "fine", "label": "[1,"}, "does not parse", "'label'"),
}


@pytest.mark.parametrize("reason", list(BAD_ROWS))
def test_each_bad_row_names_file_line_column_and_fix(reason, tmp_path, tiny_encoder):
    bad, message, column = BAD_ROWS[reason]
    good = [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)]
    train = write_rows(tmp_path / "train.csv", good)
    val = write_rows(tmp_path / "val.csv", [*good[:3], bad, *good[3:5]])
    with pytest.raises(HeadfitDataError) as error:
        make(tmp_path, tiny_encoder, train, val)
    assert message in error.value.problem
    assert error.value.where == f"{val}:5, column {column}"
    assert "data.on_bad_row=skip" in error.value.fix


def test_unseen_label_in_validation_says_so(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)])
    val = write_rows(tmp_path / "val.csv", [{"text": "fine", "label": "neutral"}])
    with pytest.raises(HeadfitDataError, match="never occurs in the training data"):
        make(tmp_path, tiny_encoder, train, val)


def test_unparsable_lines(tmp_path, tiny_encoder):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("text,label\ngood,pos\nbad,neg,extra\nfine,pos\nawful,neg\n")
    with pytest.raises(HeadfitDataError, match="3 fields where the header has 2") as error:
        make(tmp_path, tiny_encoder, csv_path, csv_path)
    assert error.value.where == f"{csv_path}:3"
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "good", "label": "pos"}\n{"text": "bad", "label": \n{"text": "x", "label": "neg"}\n')
    with pytest.raises(HeadfitDataError, match="unparsable|Expecting") as error:
        make(tmp_path, tiny_encoder, jsonl, jsonl)
    assert error.value.where == f"{jsonl}:2"


def test_skip_counts_reports_and_writes_the_skipped_rows(tmp_path, tiny_encoder, caplog):
    rows = [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)]
    rows[2] = {"text": "", "label": "pos"}
    rows[5] = {"text": "fine", "label": ""}
    rows[7] = {"text": "   ", "label": "neg"}
    train = write_rows(tmp_path / "train.csv", rows)
    caplog.set_level("INFO")
    dm = make(tmp_path, tiny_encoder, train, train, on_bad_row="skip")
    assert len(dm.datasets["train"]) == 7
    assert "train: 10 rows read = 7 used + 3 skipped (empty text: 2, missing label: 1)" in caplog.text
    skipped = [json.loads(line) for line in (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()]
    assert [(r["split"], r["where"], r["reason"]) for r in skipped if r["split"] == "train"] == [
        ("train", f"{train}:4", "empty text"), ("train", f"{train}:7", "missing label"),
        ("train", f"{train}:9", "empty text")]


def test_duplicates_across_train_and_test_are_counted(tmp_path, tiny_encoder, caplog):
    rows = [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)]
    train = write_rows(tmp_path / "train.csv", rows)
    test = write_rows(tmp_path / "test.csv", [*rows[:3], {"text": "something new", "label": "pos"}])
    caplog.set_level("INFO")
    make(tmp_path, tiny_encoder, train, train, test)
    assert "test: 3 of 4 rows have a text that also occurs in train" in caplog.text


def test_the_duplicate_count_is_the_same_read_in_pieces_and_from_splits_of_one_file(tmp_path):
    """repeated_texts reads train a piece at a time and gives each piece's file pages back: the count must not
    depend on the piece size, nor on the rows being a split (an index mapping) of one memory-mapped file."""
    texts = [f"only row {i}" if i % 6 == 1 else f"text {i % 7}" if i % 3 else f" TEXT {i % 5} " for i in range(60)]
    Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "all")
    data = Dataset.load_from_disk(tmp_path / "all")
    train, other = data.select(range(0, 60, 2)), data.select(range(1, 60, 2))  # both mappings onto the file
    expected = sum(" ".join(t.split()).lower() in {" ".join(u.split()).lower() for u in train["text"]}
                   for t in other["text"])
    assert 0 < expected < len(other)
    assert {repeated_texts(train, other, rows=rows) for rows in (1, 4, 100)} == {expected}
    assert repeated_texts(data.select(range(30)), Dataset.from_dict({"text": ["text 1", "nothing"]})) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")
def test_released_pages_leave_the_resident_set_and_the_values_stay(tmp_path):
    def file_pages() -> int:  # kB of memory-mapped files resident in this process
        return int(next(line for line in open("/proc/self/status") if line.startswith("RssFile")).split()[1])

    Dataset.from_dict({"text": [f"{i:08d}" * 100 for i in range(32_000)]}).save_to_disk(tmp_path / "big")  # 25 MB
    column = Dataset.load_from_disk(tmp_path / "big").data.column("text")
    before = file_pages()
    lengths = pc.sum(pc.utf8_length(column)).as_py()  # reads every text: their pages become resident
    read = file_pages() - before
    assert read > 15_000  # kB
    release_pages(column)
    assert file_pages() - before < read / 2
    assert column[12_345].as_py() == "00012345" * 100 and pc.sum(pc.utf8_length(column)).as_py() == lengths


def test_select_is_datasets_select_without_its_per_row_python_objects(tmp_path, monkeypatch):
    """headfit's `select` builds the index mapping itself (datasets' turns the row numbers into a Python list):
    the rows, their order, a mapping onto a mapping, the format and a fingerprint that names the rows."""
    import numpy as np

    from headfit.data import sources

    Dataset.from_dict({"text": [f"t{i}" for i in range(50)], "n": list(range(50))}).save_to_disk(tmp_path / "d")
    data = Dataset.load_from_disk(tmp_path / "d")
    rows = np.array([7, 3, 3, 49, 0])
    picked = sources.select(data, rows)
    assert picked["text"] == data.select(rows)["text"] == ["t7", "t3", "t3", "t49", "t0"]
    inner = sources.select(data, np.arange(10, 40))
    assert sources.select(inner, [0, 29, 5])["n"] == [10, 39, 15]
    formatted = sources.select(data.with_format("numpy", columns=["n"]), [1, 2])
    assert formatted.format["type"] == "numpy" and formatted[:]["n"].tolist() == [1, 2]
    assert sources.select(data, rows)._fingerprint == picked._fingerprint != sources.select(data, rows[:4])._fingerprint
    assert len(sources.select(data, np.array([], dtype=np.int64))) == 0
    with pytest.raises(IndexError):
        sources.select(data, [50])
    with pytest.raises(IndexError):
        sources.select(data, [-1])
    monkeypatch.setattr(sources, "TAKE_ROWS", 4)  # a mapped column read gathers in blocks: the same values
    assert sources.numpy_column(picked, "n").tolist() == [7, 3, 3, 49, 0]
    assert sources.numpy_column(inner, "n").tolist() == list(range(10, 40))


def test_one_label_a_row_splits_as_the_lists_do_from_a_byte_a_row(tmp_path, monkeypatch):
    """The split of a single-label column reads it as one small integer per row (in pieces) and draws the same rows as
    the list layout; a column where some row holds no label or two keeps the list layout."""
    import numpy as np

    from headfit.data import sources
    from headfit.data.split import stratified_split

    monkeypatch.setattr(sources, "TAKE_ROWS", 7)  # several pieces
    ids = [[i % 3 if i % 5 else 3] for i in range(40)]
    Dataset.from_dict({"ids": ids}).save_to_disk(tmp_path / "one")
    data = Dataset.load_from_disk(tmp_path / "one")
    single = sources.single_ids(data, "ids", labels=4)
    assert single.dtype == np.int8 and single.tolist() == [row[0] for row in ids]  # a byte a row
    assert sources.single_ids(data, "ids", labels=300).dtype == np.int16
    as_lists = stratified_split(*sources.ragged_column(data, "ids"), 0.25, seed=5)
    as_ids = stratified_split(single, None, 0.25, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(as_lists, as_ids))
    assert sorted(single[as_ids[1]].tolist()) == [0] * 3 + [1] * 3 + [2] * 2 + [3] * 2  # a quarter of 11, 11, 10, 8
    Dataset.from_dict({"ids": [[0], [1, 2], [], [1]] * 5}).save_to_disk(tmp_path / "multi")
    assert sources.single_ids(Dataset.load_from_disk(tmp_path / "multi"), "ids", labels=3) is None


def test_length_report_counts_lengths_as_numpy_would_from_the_rows_themselves(tmp_path, monkeypatch):
    """The length report reads token counts a piece at a time into counts per length; its percentiles, longest
    row and share cut must be those of the lengths themselves."""
    import numpy as np

    from headfit.data import sources
    from headfit.data.tokenize import counted_percentiles

    monkeypatch.setattr(sources, "TAKE_ROWS", 9)  # several pieces, the longest row in a late one
    rng = np.random.default_rng(3)
    for lengths in ([5], [3, 3], [1, 2, 3, 4], rng.integers(2, 40, 101).tolist() + [128]):
        Dataset.from_dict({"length": lengths}).save_to_disk(tmp_path / "lengths")
        counts = sources.value_counts(Dataset.load_from_disk(tmp_path / "lengths"), "length")
        percents = [0, 1, 50, 90, 99, 100]
        assert np.allclose(counted_percentiles(counts, percents), np.percentile(lengths, percents))
        assert counts.sum() == len(lengths) and np.flatnonzero(counts)[-1] == max(lengths)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident set is read from /proc")
def test_training_reads_at_random_keep_the_file_pages_bounded_and_memory_of_its_own_intact(tmp_path):
    """Rows read at random map ~150 KB of the file each (fault-around); the loader's dataset gives those pages
    back after each read, where datasets' own reads keep them. Releasing memory that is the process's own (an
    in-memory table) loses nothing."""
    import random

    from headfit.data import datamodule

    def file_pages() -> int:  # kB
        return int(next(line for line in open("/proc/self/status") if line.startswith("RssFile")).split()[1])

    Dataset.from_dict({"input_ids": [[i] * 200 for i in range(32_000)]}).save_to_disk(tmp_path / "big")  # 26 MB
    rows = random.Random(0).sample(range(32_000), 2_000)
    grown = {}
    for reader in ("datasets", "loader"):
        data = Dataset.load_from_disk(tmp_path / "big")
        read = data.__getitem__ if reader == "datasets" else datamodule._Rows(data, ["input_ids"]).__getitems__
        release_pages(data.data.column("input_ids"))
        before = file_pages()
        for start in range(0, len(rows), 16):
            batch = read(rows[start:start + 16])
            got = batch["input_ids"] if reader == "datasets" else [row["input_ids"] for row in batch]
            assert [ids[0] for ids in got] == rows[start:start + 16]
        grown[reader] = file_pages() - before
        release_pages(data.data.column("input_ids"))
    assert grown["datasets"] > 10_000 and grown["loader"] < grown["datasets"] / 3, grown

    own = Dataset.from_dict({"n": list(range(100_000))}).data.column("n")  # in memory
    release_pages(own)
    assert own.to_pylist() == list(range(100_000))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resident set is read from /proc")
def test_tokenising_gives_back_the_file_pages_of_the_texts_it_has_read(tmp_path, tiny_encoder):
    """The tokenising process reads its share of the text file batch after batch; without giving the pages back
    it would come to hold the whole share (a 4M-row file: +110 MiB a worker). The ids are those of a plain call."""
    from headfit.data.tokenize import tokenize
    from headfit.encoder import load_tokenizer

    def file_pages() -> int:  # kB
        return int(next(line for line in open("/proc/self/status") if line.startswith("RssFile")).split()[1])

    texts = [" ".join(["good", "bad", "movie", "the"][(i + j) % 4] for j in range(300)) for i in range(12_000)]
    Dataset.from_dict({"text": texts, "text_pair": [None] * len(texts)}).save_to_disk(tmp_path / "raw")  # 17 MB
    data = Dataset.load_from_disk(tmp_path / "raw")
    release_pages(data.data.column("text"))
    tokenizer = load_tokenizer(tiny_encoder)
    before = file_pages()
    tokens = tokenize(data, "raw", tokenizer, 16, tmp_path / "cache", "train", num_proc=1)
    assert file_pages() - before < 4_000  # kB: the text file is ~17,000
    expected = tokenizer(texts[:3], truncation=True, max_length=16)["input_ids"]
    assert tokens[:3]["input_ids"] == expected


def test_validation_split_is_stratified_seeded_and_disjoint(tmp_path, tiny_encoder):
    rows = [{"text": f"{t} {i}", "label": "a" if i < 30 else "b" if i < 45 else "c"}
            for i, t in enumerate(TEXTS * 5)]
    train = write_rows(tmp_path / "train.csv", rows)
    dm = make(tmp_path, tiny_encoder, train, val_fraction=0.2, seed=3)
    val = dm.datasets["val"]["label_ids"]
    assert sorted(ids[0] for ids in val) == [0] * 6 + [1] * 3 + [2]
    assert not set(texts_of(dm, "val")) & set(texts_of(dm, "train"))
    assert texts_of(make(tmp_path, tiny_encoder, train, val_fraction=0.2, seed=3), "val") == texts_of(dm, "val")
    assert texts_of(make(tmp_path, tiny_encoder, train, val_fraction=0.2, seed=4), "val") != texts_of(dm, "val")


def test_max_train_rows_is_a_seeded_subset(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", [{"text": f"{t} {i}", "label": SENTIMENT[i % 10]}
                                                for i, t in enumerate(TEXTS * 3)])
    first = texts_of(make(tmp_path, tiny_encoder, train, train, max_train_rows=7, seed=1), "train")
    again = texts_of(make(tmp_path, tiny_encoder, train, train, max_train_rows=7, seed=1), "train")
    assert len(first) == 7 and first == again


def test_second_setup_loads_cached_token_ids(tmp_path, tiny_encoder, caplog):
    train = write_rows(tmp_path / "train.csv", [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)])
    caplog.set_level("INFO", logger="headfit.data.tokenize")
    make(tmp_path, tiny_encoder, train, train)
    # the validation split is the same file: its token ids are those just cached for train
    assert "train: tokenised and cached" in caplog.text and "val: loaded cached" in caplog.text
    caplog.clear()
    make(tmp_path, tiny_encoder, train, train)
    assert "loaded cached" in caplog.text and "tokenised and cached" not in caplog.text
    caplog.clear()
    make(tmp_path, tiny_encoder, train, train, max_length=8)  # another max_length: another cache entry
    assert "tokenised and cached" in caplog.text


def test_changed_file_is_read_again(tmp_path, tiny_encoder):
    rows = [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)]
    train = write_rows(tmp_path / "train.csv", rows)
    make(tmp_path, tiny_encoder, train, train)
    write_rows(train, rows[:6])
    assert len(make(tmp_path, tiny_encoder, train, train).datasets["train"]) == 6


def batches(sampler, batch_size):
    order = list(sampler)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def test_sampler_is_seeded_per_epoch_and_groups_lengths():
    lengths = torch.randint(3, 60, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthGroupedSampler(lengths, 32, seed=7)
    first = list(sampler)
    assert first == list(LengthGroupedSampler(lengths, 32, seed=7))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert sorted(first) == list(range(1000))

    def efficiency(order):
        real = padded = 0
        for batch in (order[i:i + 32] for i in range(0, len(order), 32)):
            real += sum(lengths[i] for i in batch)
            padded += max(lengths[i] for i in batch) * len(batch)
        return real / padded

    assert efficiency(first) > 0.95
    assert efficiency(torch.randperm(1000).tolist()) < 0.75


@pytest.mark.parametrize("rows", [1000, 1001, 64, 66])
def test_sampler_under_ddp_gives_each_rank_distinct_rows_and_the_same_number_of_batches(rows):
    lengths = torch.randint(3, 60, (rows,), generator=torch.Generator().manual_seed(1)).tolist()
    ranks = [LengthGroupedSampler(lengths, 32, seed=0, num_replicas=2, rank=r) for r in range(2)]
    for shuffle in (True, False):
        for sampler in ranks:
            sampler.shuffle = shuffle
        orders = [list(s) for s in ranks]
        assert [len(o) for o in orders] == [len(s) for s in ranks]
        assert len(batches(ranks[0], 32)) == len(batches(ranks[1], 32))
        assert sorted(orders[0] + orders[1]) == list(range(rows))  # none lost, none twice


def test_sampler_repeats_a_row_only_when_the_last_batch_cannot_reach_every_rank():
    ranks = [LengthGroupedSampler(list(range(65)), 32, num_replicas=2, rank=r) for r in range(2)]
    orders = [list(s) for s in ranks]
    assert len(orders[0]) == len(orders[1]) == 33  # 32 + 1 each: the 65th row's batch is shared by both ranks
    assert set(orders[0] + orders[1]) == set(range(65))


def test_predictions_come_back_in_input_order(tmp_path, tiny_encoder):
    rows = [{"text": t, "label": s} for t, s in zip(TEXTS, SENTIMENT)]
    train = write_rows(tmp_path / "train.csv", rows)
    dm = make(tmp_path, tiny_encoder, train, train, train)
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind).eval()
    sorted_batches = pl.Trainer(logger=False, enable_progress_bar=False).predict(module, dm.predict_dataloader())
    assert torch.cat([b["index"] for b in sorted_batches]).tolist() != list(range(10))  # sorted by length
    merged = in_input_order(sorted_batches)
    expected = []
    with torch.no_grad():
        for i in range(10):  # one row at a time, in file order
            batch = dm.collate([{**dm.datasets["test"][i], "index": i}])
            logits = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            expected.append(module.task.probabilities(logits))
    assert torch.allclose(merged["probabilities"], torch.cat(expected), atol=1e-5)
    assert merged["labels"] == module.task.names(module.task.predict(torch.cat(expected)))


def test_hub_dataset_offline_fails_in_words(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    import huggingface_hub

    # both read the variables when first imported (here, long before this test): set what they read
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HeadfitConfigError) as error:
        make(tmp_path, tiny_encoder, "train", "validation", hub_dataset="no-such-user/no-such-dataset")
    assert "data.hub_dataset" in error.value.where and "save_to_disk" in error.value.fix


def test_a_row_missing_one_of_several_label_columns(tmp_path, tiny_encoder):
    rows = [{"text": t, "joy": i % 2, "anger": 1 - i % 2} for i, t in enumerate(TEXTS)]
    del rows[3]["anger"]
    train = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(HeadfitDataError) as error:
        make(tmp_path, tiny_encoder, train, train, label_columns=["joy", "anger"])
    assert error.value.where == f"{train}:4, column 'label'"


# The sampler's batches as the list-based sampler made them before it took arrays (commit be36fb1): the same
# seed must give the same batches, or a run resumed across the change would not continue where it stopped.
PINNED_ORDERS = {(1, True, 0): ["cfd5a8d668f33722", "3ce13cf1835912e5"], (1, False, 0): ["3a142a3b965b5fd3"] * 2,
                 (2, True, 0): ["1c279097ba52a95d", "4412f6b460f2848f"],
                 (2, True, 1): ["85999cc007608070", "768fd29d59b4db5c"],
                 (2, False, 0): ["a7de80f5140c071f"] * 2, (2, False, 1): ["732ddb4d86ce6493"] * 2}


@pytest.mark.parametrize("as_array", [False, True])
def test_sampler_from_an_array_gives_the_batches_it_gave_before(as_array):
    import hashlib
    import random

    import numpy as np

    generator = random.Random(5)
    lengths = [generator.randint(1, 60) for _ in range(203)]
    lengths = np.array(lengths, dtype=np.int32) if as_array else lengths

    def digest(order):
        return hashlib.sha256(json.dumps(order).encode()).hexdigest()[:16]

    for (ranks, shuffle, rank), expected in PINNED_ORDERS.items():
        sampler = LengthGroupedSampler(lengths, 8, shuffle=shuffle, seed=3, num_replicas=ranks, rank=rank,
                                       pool_batches=4)
        orders = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            orders.append(digest(list(sampler)))
        assert orders == expected, (ranks, shuffle, rank)
    resumed = LengthGroupedSampler(lengths, 8, seed=3, pool_batches=4)
    resumed.resume(1, 5)
    assert digest(list(resumed)) == "b7e6fdffbeff173e"


def tokenizers_to_compare(tiny_encoder):
    from transformers import AutoTokenizer

    found = [AutoTokenizer.from_pretrained(tiny_encoder)]
    try:  # the bundled MiniLM (a real WordPiece vocabulary), when installed
        from headfit.encoder import bundled_minilm_path

        found.append(AutoTokenizer.from_pretrained(bundled_minilm_path()))
    except Exception:
        pass
    return found


@pytest.mark.parametrize("pairs", [False, True])
def test_the_token_cache_holds_what_calling_the_tokenizer_gives(tiny_encoder, pairs):
    # set-up encodes through the tokenizer's Rust backend; ids, types and masks must be the tokenizer's own
    import pyarrow as pa

    from headfit.data.tokenize import _tokenize, truncating_backend

    texts = [*TEXTS, "good " * 60, "", "  ", "[SEP] good [CLS] film", "Ünïcödé façade — naïve film"]
    second = list(reversed(texts)) if pairs else [None] * len(texts)
    for tokenizer in tokenizers_to_compare(tiny_encoder):
        for max_length in (6, 16, 128):
            table = _tokenize(pa.table({"text": texts, "text_pair": pa.array(second, pa.string())}), tokenizer,
                              max_length, truncating_backend(tokenizer, max_length))
            expected = tokenizer(texts, second if pairs else None, truncation=True, max_length=max_length)
            for name in ("input_ids", "attention_mask", "token_type_ids"):
                assert table.column(name).to_pylist() == expected[name], (name, max_length)
            assert table.column("length").to_pylist() == [len(ids) for ids in expected["input_ids"]]


def test_calling_the_tokenizer_does_not_change_the_token_cache_key(tiny_encoder):
    # calling a fast tokenizer sets truncation on its backend; the cache key must not see that
    from transformers import AutoTokenizer

    from headfit.data.tokenize import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    before = tokenizer_fingerprint(tokenizer)
    tokenizer(TEXTS, truncation=True, max_length=5, padding="max_length")
    assert tokenizer_fingerprint(tokenizer) == before
