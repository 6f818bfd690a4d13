"""Raw label values -> kind, label names and ids (task.kind=auto and the accepted layouts)."""

import numpy as np
import pytest

from headfit import HeadfitConfigError, HeadfitDataError
from headfit.labels import LabelError, LabelSpace


def infer(values, **options):
    return LabelSpace.infer(values, lambda i: f"train.csv:{i + 2}", **options)


@pytest.mark.parametrize(
    ("values", "kind", "labels", "ids"),
    [
        (["pos", "neg", "pos"], "binary", ("neg", "pos"), [(1,), (0,), (1,)]),
        (["1", "0", "1"], "binary", ("0", "1"), [(1,), (0,), (1,)]),                 # CSV strings
        ([1, 0, 1], "binary", ("0", "1"), [(1,), (0,), (1,)]),                       # ints
        ([True, False, True], "binary", ("0", "1"), [(1,), (0,), (1,)]),             # bools
        (["true", "false", "true"], "binary", ("0", "1"), [(1,), (0,), (1,)]),
        ([1.0, 0.0, 1.0], "binary", ("0", "1"), [(1,), (0,), (1,)]),                 # 0/1 floats
        (np.array([1, 0, 1]), "binary", ("0", "1"), [(1,), (0,), (1,)]),             # numpy ints
        ([[1], [0], [2]], "multiclass", ("0", "1", "2"), [(1,), (0,), (2,)]),        # (B, 1) lists
        (["[1]", "[0]", "[2]"], "multiclass", ("0", "1", "2"), [(1,), (0,), (2,)]),  # JSON (B, 1)
        ([[0, 1, 0], [1, 0, 0], [0, 0, 1]], "multiclass", ("0", "1", "2"), [(1,), (0,), (2,)]),  # one-hot
        (["b", "c", "a"], "multiclass", ("a", "b", "c"), [(1,), (2,), (0,)]),
        ([3, 5, 4], "multiclass", ("3", "4", "5"), [(0,), (2,), (1,)]),  # not 0..K-1: names, numeric order
        (["4,27", "27", "0"], "multilabel", ("0", "4", "27"), [(1, 2), (2,), (0,)]),         # delimited
        ([["joy", "anger"], ["joy"], []], "multilabel", ("anger", "joy"), [(0, 1), (1,), ()]),  # lists
        ([[1, 0, 1], [0, 1, 0], [1, 1, 0]], "multilabel", ("0", "1", "2"), [(0, 2), (1,), (0, 1)]),  # multi-hot
    ],
)
def test_every_accepted_layout(values, kind, labels, ids):
    space = infer(values)
    assert (space.kind, space.labels) == (kind, labels)
    assert [space.ids(value) for value in values] == ids


def test_given_label_names_make_index_labels_decode_to_names():
    space = infer(["4,2", "1", "0"], labels=["anger", "joy", "fear", "love", "grief"])
    assert space.kind == "multilabel" and space.by == "index"
    assert space.ids("4,2") == (2, 4)


def test_given_label_names_match_by_name():
    space = infer(["joy|fear", "fear"], labels=["joy", "fear", "love"], delimiter="|")
    assert space.ids("joy|fear") == (0, 1)
    assert space.labels == ("joy", "fear", "love")


def test_kind_inference_logs_its_evidence(caplog):
    caplog.set_level("INFO", logger="headfit.labels")
    infer(["a,b", "a"])
    assert "multilabel" in caplog.text and "1 of 2 training rows have 0 or several labels" in caplog.text


def test_forced_kind_with_several_labels_in_a_row_names_the_row():
    with pytest.raises(HeadfitDataError) as error:
        infer(["a", "b", ["a", "b"]], kind="multiclass")
    assert error.value.where == "train.csv:4"


def test_num_labels_disagreeing_with_the_data_says_both():
    with pytest.raises(HeadfitConfigError) as error:
        infer(["a", "b", "c"], num_labels=2)
    message = str(error.value)
    assert "task.num_labels=2" in message and "3 labels" in message and "[a, b, c]" in message


def test_labels_given_and_data_disagreeing_says_both():
    with pytest.raises(HeadfitDataError) as error:
        infer(["pos", "neg", "meh"], labels=["neg", "pos"])
    assert "'meh'" in str(error.value) and "[neg, pos]" in str(error.value) and error.value.where == "train.csv:4"
    with pytest.raises(HeadfitConfigError, match="task.labels has 2 names but the data has 3"):
        infer([[1, 0, 0], [0, 1, 0]], labels=["a", "b"])


def test_index_outside_given_labels_is_an_error():
    with pytest.raises(HeadfitDataError, match="label index 7 is outside the 3 labels"):
        infer([0, 7], labels=["a", "b", "c"])


def test_missing_and_non_integral_labels_are_errors_with_the_row():
    for values in (["a", None], ["a", ""], [1.0, float("nan")], ["a", "NaN"], [0.0, 0.5]):
        with pytest.raises(HeadfitDataError) as error:
            infer(values)
        assert error.value.where == "train.csv:3"


def test_a_single_class_is_an_error():
    with pytest.raises(HeadfitDataError, match="single class"):
        infer(["a", "a"])


def test_binary_forced_with_three_labels_is_an_error():
    with pytest.raises(HeadfitConfigError, match="exactly 2 labels"):
        infer(["a", "b", "c"], kind="binary")


def test_unseen_label_in_another_split():
    space = infer(["a", "b"])
    with pytest.raises(LabelError, match="'c' is not one of the 2 labels"):
        space.ids("c")


def test_batch_and_counts():
    space = infer(["a,b", "b", "c"])
    ids = [space.ids(v) for v in ["a,b", "b", "c"]]
    assert space.batch(ids).tolist() == [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert space.counts(ids) == [1, 2, 1]


def test_rows_named_after_skipping_a_vector_of_another_width_are_the_right_rows():
    values = [[1, 0, 0], [1, 0, 0, 0], [0, 1, 0], [1, 1, 0]]
    with pytest.raises(HeadfitDataError, match="has 2 ones") as error:
        infer(values, kind="multiclass", skip_unreadable=True)
    assert error.value.where == "train.csv:5"  # values[3], not values[2]: the skipped row does not shift it


def test_mixed_indices_and_names_need_the_names():
    with pytest.raises(HeadfitDataError, match="mixes indices and names") as error:
        infer([1, 0, "pos", "neg"])
    assert "train.csv:2" in error.value.problem and "train.csv:4" in error.value.problem
    assert infer([1, 0, "pos", "neg"], labels=["neg", "pos"]).ids("pos") == (1,)
