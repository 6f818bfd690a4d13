"""Long documents, data side (issue #13): windows with a stride, the cap, batches of whole documents, batches bounded
in windows under DDP and resume."""

import logging
import types

import pytest
import pytorch_lightning as pl
import torch
from transformers import AutoTokenizer

from headfit import HeadfitConfigError, TextClassificationDataModule
from headfit.data import options
from headfit.data.sampler import ChunkBoundedSampler

from conftest import EXTRA_WORDS, write_rows

# Words the tiny tokenizer knows, one token each; documents of 3 to 130 tokens.
SIZES = [3, 130, 8, 40, 14, 60, 5, 90, 25, 12, 70, 4, 33, 100, 9, 50, 20, 7, 80, 15]
MAX_LENGTH, STRIDE = 16, 4  # 14 text tokens a window, 10 new ones each after the first


def text(size: int, start: int = 0) -> str:
    return " ".join(EXTRA_WORDS[(start + k) % len(EXTRA_WORDS)] for k in range(size))


def documents(tmp_path, sizes=SIZES, name="train.csv"):
    return write_rows(tmp_path / name, [{"text": text(size, i), "label": ["pos", "neg"][i % 2]}
                                        for i, size in enumerate(sizes)])


def make(tmp_path, tiny_encoder, train, val="same", **options):
    arguments = dict(max_length=MAX_LENGTH, batch_size=4, long_text="chunk", chunk_stride=STRIDE)
    dm = TextClassificationDataModule(tokenizer=tiny_encoder, train_path=str(train),
                                      val_path=str(train) if val == "same" else val, cache_dir=str(tmp_path / "cache"),
                                      report_dir=str(tmp_path / "run"), **{**arguments, **options})
    dm.setup("fit")
    return dm


def rows(dm, split="train", indices=None):
    data = dm.datasets[split]
    return [{**data[i], "index": i} for i in (range(len(data)) if indices is None else indices)]


def test_windows_reassemble_to_the_document_each_with_its_special_tokens(tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path))
    tokenizer = dm.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for row, size in zip(rows(dm), SIZES):
        windows = row["input_ids"]
        full = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        assert len(full) == size and tokenizer.unk_token_id not in full
        assert row["chunks"] == len(windows) == max(1, 1 + -(-(len(full) - 14) // 10)) and row["chunks_dropped"] == 0
        assert row["length"] == sum(map(len, windows))
        assert all(w[0] == cls and w[-1] == sep and len(w) <= MAX_LENGTH for w in windows)
        assert all(len(w) == MAX_LENGTH for w in windows[:-1])  # full windows, except the document's last
        content = [w[1:-1] for w in windows]
        assert all(a[-STRIDE:] == b[:STRIDE] for a, b in zip(content, content[1:]))  # the overlap
        assert content[0] + [t for w in content[1:] for t in w[STRIDE:]] == full
        assert row["token_type_ids"] == [[0] * len(w) for w in windows]


def test_a_document_shorter_than_one_window_is_exactly_what_truncate_gives(tmp_path, tiny_encoder):
    train = documents(tmp_path, sizes=[3, 8, 14, 5, 12, 1])
    chunked = make(tmp_path, tiny_encoder, train)
    truncated = make(tmp_path, tiny_encoder, train, long_text="truncate")
    for c, t in zip(rows(chunked), rows(truncated)):
        assert c["input_ids"] == [t["input_ids"]] and c["token_type_ids"] == [t["token_type_ids"]]
        assert c["chunks"] == 1 and c["length"] == t["length"]
    chunk_batch, truncate_batch = chunked.collate(rows(chunked)), truncated.collate(rows(truncated))
    assert set(chunk_batch) - set(truncate_batch) == {"chunk_counts"}
    for key in truncate_batch:
        assert torch.equal(chunk_batch[key], truncate_batch[key]), key
    assert chunk_batch["chunk_counts"].tolist() == [1] * 6


def test_the_cap_keeps_the_first_windows_counts_the_documents_and_says_which_key(tmp_path, tiny_encoder, caplog):
    train = documents(tmp_path)
    whole = make(tmp_path, tiny_encoder, train)
    caplog.set_level("INFO", logger="headfit.data.tokenize")
    capped = make(tmp_path, tiny_encoder, train, max_chunks=3)  # 14 + 2 x 10 = 34 tokens a document
    hit = [size for size in SIZES if size > 34]
    for w, c in zip(rows(whole), rows(capped)):
        assert c["input_ids"] == w["input_ids"][:3] and c["chunks"] == min(3, w["chunks"])
        assert c["chunks_dropped"] == w["chunks"] - c["chunks"] and c["length"] == sum(map(len, c["input_ids"]))
    assert f"train: {len(hit)} of {len(SIZES)} documents hit data.max_chunks=3 (they needed up to 13 windows)" \
           in caplog.text and "raise data.max_chunks" in caplog.text
    chunked = sum(size > 14 for size in SIZES)
    assert "train: tokens per document (over its windows)" in caplog.text
    assert f"{chunked} of {len(SIZES)} documents ({100 * chunked / len(SIZES):.1f}%) chunked into windows of " \
           f"data.max_length=16 with data.chunk_stride=4; windows per document p50 " in caplog.text
    assert "max 3" in caplog.text and "rows cut at data.max_length" not in caplog.text


def test_the_cache_key_holds_the_chunking(tmp_path, tiny_encoder, caplog):
    train = documents(tmp_path)
    caplog.set_level("INFO", logger="headfit.data.tokenize")
    make(tmp_path, tiny_encoder, train, long_text="truncate")
    for changed in [{}, {"chunk_stride": 2}, {"max_chunks": 4}]:
        caplog.clear()
        make(tmp_path, tiny_encoder, train, **changed)
        assert "train: tokenised and cached" in caplog.text and "train: loaded cached" not in caplog.text, changed
    caplog.clear()
    make(tmp_path, tiny_encoder, train, max_chunks=4)
    assert "train: loaded cached" in caplog.text and "tokenised and cached" not in caplog.text


def test_a_batch_holds_whole_documents_their_windows_in_order(tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path))
    picked = rows(dm, indices=[1, 0, 3])  # 13, 1 and 4 windows
    batch = dm.collate(picked)
    windows = [w for row in picked for w in row["input_ids"]]
    assert batch["input_ids"].shape == (18, MAX_LENGTH) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].shape == batch["token_type_ids"].shape == (18, MAX_LENGTH)
    assert batch["chunk_counts"].tolist() == [13, 1, 4] and batch["chunk_counts"].dtype == torch.int64
    assert batch["attention_mask"].sum(1).tolist() == [len(w) for w in windows]
    assert [ids[:len(w)].tolist() for ids, w in zip(batch["input_ids"], windows)] == windows
    assert batch["labels"].shape == (3,) and batch["index"].tolist() == [1, 0, 3]
    short = dm.collate(rows(dm, indices=[0, 2]))  # single windows: padded to the longer one, not to max_length
    assert short["input_ids"].shape == (2, 10)


def test_several_tasks_label_whole_documents(tmp_path, tiny_encoder):
    train = write_rows(tmp_path / "train.csv", [{"text": text(size, i), "sentiment": ["pos", "neg"][i % 2],
                                                 "topic": ["sports", "food", ""][i % 3]}
                                                for i, size in enumerate(SIZES)])
    tasks = {"sentiment": {"label_column": "sentiment"}, "topic": {"label_column": "topic", "missing": "ignore"}}
    dm = make(tmp_path, tiny_encoder, train, max_chunks_per_batch=12, tasks=tasks)
    for batch in dm.train_dataloader():
        documents_in_batch = len(batch["index"])
        assert set(batch["labels"]) == set(batch["labelled"]) == {"sentiment", "topic"}
        assert batch["labels"]["sentiment"].shape == batch["labels"]["topic"].shape == (documents_in_batch,)
        assert batch["labelled"]["topic"].tolist() == [i % 3 != 2 for i in batch["index"].tolist()]
        assert batch["chunk_counts"].shape == (documents_in_batch,)
        assert batch["input_ids"].shape[0] == int(batch["chunk_counts"].sum())


def epoch(loader):
    return [batch["index"].tolist() for batch in loader]


def test_max_chunks_per_batch_bounds_every_batch_and_logs_the_documents_above_it_once(tmp_path, tiny_encoder,
                                                                                       caplog):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), max_chunks_per_batch=8)
    chunks = dm.datasets["train"]["chunks"]
    above = [i for i, n in enumerate(chunks) if n > 8]
    caplog.set_level("WARNING")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.train_dataloader()):
        batches = [(batch["index"].tolist(), batch["chunk_counts"].tolist(), batch["input_ids"].shape[0])
                   for batch in loader]
        assert len(batches) == len(loader)
        assert sorted(i for index, _, _ in batches for i in index) == list(range(len(SIZES)))
        for index, counts, windows in batches:
            assert counts == [chunks[i] for i in index] and windows == sum(counts)
            assert len(index) <= 4 and (windows <= 8 or index in [[i] for i in above])
    for split in ("train", "val"):  # the train loader was made twice
        assert caplog.text.count(f"{split}: {len(above)} documents have more windows than "
                                 "data.max_chunks_per_batch=8 (up to 13)") == 1


def test_the_bounded_batches_are_seeded_per_epoch_with_the_same_number_every_epoch(tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), max_chunks_per_batch=8)
    loader = dm.train_dataloader()
    first, again = epoch(loader), epoch(dm.train_dataloader())
    assert first == again  # deterministic
    loader.sampler.set_epoch(1)
    second = epoch(loader)
    assert second != first and len(second) == len(first) == len(loader)
    assert epoch(dm.val_dataloader()) == epoch(dm.val_dataloader())


def random_documents(count, seed):
    generator = torch.Generator().manual_seed(seed)
    chunks = torch.randint(1, 13, (count,), generator=generator)
    chunks[torch.rand(count, generator=generator) < 0.6] = 1  # most documents fit in one window
    lengths = (chunks - 1) * 128 + torch.randint(3, 129, (count,), generator=generator)
    return chunks.tolist(), lengths.tolist()


@pytest.mark.parametrize(("count", "bound"), [(500, 32), (501, 32), (7, 12), (3, 4), (1, 64)])
def test_under_ddp_each_rank_gets_distinct_documents_and_the_same_number_of_batches(count, bound):
    chunks, lengths = random_documents(count, count)
    for shuffle in (True, False):
        ranks = [ChunkBoundedSampler(chunks, lengths, 16, bound, shuffle=shuffle, seed=3, num_replicas=2, rank=r)
                 for r in range(2)]
        counts = set()
        for epoch_number in range(3):
            for sampler in ranks:
                sampler.set_epoch(epoch_number)
            orders = [list(sampler) for sampler in ranks]
            assert len(orders[0]) == len(orders[1]) == len(ranks[0]) == len(ranks[1])
            counts.add(len(orders[0]))
            batches = [batch for order in orders for batch in order]
            seen = [i for batch in batches for i in batch]
            assert set(seen) == set(range(count))  # none lost
            if len(seen) != count:  # a document twice only when every batch is one document, an odd number of them
                assert all(len(batch) == 1 for batch in batches) and len(seen) == count + 1
            for batch in batches:
                assert len(batch) <= 16 and (sum(chunks[i] for i in batch) <= bound or len(batch) == 1)
        assert len(counts) == 1  # the same number of batches every epoch


def test_the_bounded_sampler_groups_similar_lengths():
    chunks, lengths = [1] * 2000, torch.randint(3, 128, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = ChunkBoundedSampler(chunks, lengths, 32, 64, seed=1)

    def efficiency(batches):
        return sum(lengths[i] for b in batches for i in b) / sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = list(sampler)
    shuffled = torch.randperm(2000).split(32)
    assert efficiency(grouped) > 0.95 and efficiency([b.tolist() for b in shuffled]) < 0.75


@pytest.mark.parametrize("bound", [None, 8])
def test_resuming_mid_epoch_gives_the_remaining_batches(bound, tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), max_chunks_per_batch=bound)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(2)
    whole = epoch(loader)
    assert len(whole) >= 4
    dm.load_state_dict({"epoch": 2, "batches_done": 3})
    resumed = dm.train_dataloader()
    assert epoch(resumed) == whole[3:] and len(resumed) == len(whole)  # Lightning counts the 3 as done
    resumed.sampler.set_epoch(3)  # the next epoch from its start
    loader.sampler.set_epoch(3)
    assert epoch(resumed) == epoch(loader)


class _Indices(pl.LightningModule):
    """Returns each batch's documents, to see the loaders through Lightning's own handling."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def validation_step(self, batch, batch_idx):
        assert batch["input_ids"].shape[0] == int(batch["chunk_counts"].sum()) <= 8 or len(batch["index"]) == 1
        self.seen.extend(batch["index"].tolist())

    def predict_step(self, batch, batch_idx):
        return batch["index"]


def test_lightning_keeps_the_bounded_loaders(tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), max_chunks_per_batch=8)
    module = _Indices()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.validate(module, dm.val_dataloader(), verbose=False)
    assert sorted(module.seen) == list(range(len(SIZES)))
    predicted = trainer.predict(module, dm.val_dataloader())
    assert sorted(torch.cat(predicted).tolist()) == list(range(len(SIZES)))


@pytest.mark.parametrize(("changed", "key", "message"), [
    ({"long_text": "window"}, "data.long_text", "unknown data.long_text='window'"),
    ({"chunk_stride": -1}, "data.chunk_stride", "data.chunk_stride=-1 is not a whole number >= 0"),
    ({"chunk_stride": 16}, "data.chunk_stride", "is not below data.max_length=16"),
    ({"chunk_stride": 14}, "data.chunk_stride", "holds 14 text tokens after the tokenizer's 2 special tokens"),
    ({"max_length": 2, "chunk_stride": 0}, "data.max_length", "leaves a window no room for text"),
    ({"max_chunks": 0}, "data.max_chunks", "data.max_chunks=0 is not a whole number >= 1"),
    ({"max_chunks_per_batch": 0}, "data.max_chunks_per_batch", "is not a whole number >= 1 or null"),
    ({"long_text": "truncate", "max_chunks_per_batch": 8}, "data.max_chunks_per_batch", "makes one window per text"),
    ({"text_pair_column": "text"}, "data.long_text", "data.text_pair_column is set"),
])
def test_chunking_options_are_refused_in_words(changed, key, message, tmp_path, tiny_encoder):
    with pytest.raises(HeadfitConfigError) as error:
        make(tmp_path, tiny_encoder, documents(tmp_path), **changed)
    assert error.value.where == key and message in error.value.problem


def test_truncate_ignores_the_chunking_keys_defaults(tmp_path, tiny_encoder):
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), long_text="truncate", max_length=8)  # stride 4 < 8 anyway
    assert dm.chunking is None and isinstance(dm.datasets["train"][0]["input_ids"][0], int)
    dm = make(tmp_path, tiny_encoder, documents(tmp_path), long_text="truncate", max_length=8, chunk_stride=32)
    assert "chunk_counts" not in dm.collate(rows(dm, indices=[0, 1]))
    chunked = make(tmp_path, tiny_encoder, documents(tmp_path))
    assert chunked.chunking == {"long_text": "chunk", "max_length": 16, "chunk_stride": 4, "max_chunks": 16}


def test_a_slow_tokenizer_is_refused():
    with pytest.raises(HeadfitConfigError) as error:
        options.check_windows(types.SimpleNamespace(is_fast=False), 16, 4)
    assert error.value.where == "data.long_text" and "fast tokenizer" in error.value.problem


def test_the_config_keys_reach_the_data_module(tmp_path, tiny_encoder):
    from hydra.utils import instantiate

    from test_train import config

    cfg = config(tmp_path, tiny_encoder, "data.long_text=chunk", "data.max_length=16", "data.chunk_stride=4",
                 "data.max_chunks=3", "data.max_chunks_per_batch=8")
    dm = instantiate(cfg.data, tokenizer=cfg.encoder.name_or_path, **cfg.task)
    dm.setup("fit")
    assert dm.chunking == {"long_text": "chunk", "max_length": 16, "chunk_stride": 4, "max_chunks": 3}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == int(batch["chunk_counts"].sum()) <= 8
    assert config(tmp_path, tiny_encoder).data.long_text == "truncate"


def test_unbounded_chunked_batches_are_told_with_the_bound_to_set(tmp_path, tiny_encoder, caplog):
    # batch_size 4: the four longest documents hold many windows together, and nothing bounds a batch in windows
    caplog.set_level("WARNING", logger="headfit.data.datamodule")
    make(tmp_path / "unbounded", tiny_encoder, documents(tmp_path))
    assert "set data.max_chunks_per_batch (e.g. 13)" in caplog.text
    caplog.clear()
    make(tmp_path / "bounded", tiny_encoder, documents(tmp_path), max_chunks_per_batch=13)
    assert "max_chunks_per_batch" not in caplog.text


def test_long_rows_are_measured_without_the_tokenizers_own_too_long_warning(tmp_path, tiny_encoder, caplog):
    """With truncation heavy, the set-up tokenises a sample of whole rows to suggest a max_length; rows longer than
    the model takes are what it measures, so transformers' "Token indices sequence length is longer than..." is
    noise there."""
    short_model = tmp_path / "short-model"
    AutoTokenizer.from_pretrained(tiny_encoder, model_max_length=64).save_pretrained(short_model)
    said = []  # transformers' own records (its loggers do not propagate to the root, where caplog listens)
    handler = logging.Handler(logging.WARNING)
    handler.emit = said.append
    logging.getLogger("transformers").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING):
            make(tmp_path, str(short_model), documents(tmp_path), long_text="truncate")
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert "rows are truncated" in caplog.text  # headfit's own advice, with a max_length to try
    assert not [record for record in said if "Token indices sequence length" in record.getMessage()]
