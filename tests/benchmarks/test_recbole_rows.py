"""SASRec's every-position rows hold each next-item prediction once, with the history RecBole's rows give it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.recbole.rows import every_position_rows


@given(
    length=st.integers(min_value=0, max_value=120),
    max_len=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_every_target_is_counted_once_and_sees_enough_history(length: int, max_len: int, data) -> None:
    stride = data.draw(st.integers(min_value=1, max_value=max_len))
    items = list(range(1, length + 1))  # distinct ids: an item's value is its position + 1
    counted = []  # (target position in items, the items the row shows before it)
    for inputs, targets in every_position_rows(items, max_len, stride):
        assert len(inputs) == len(targets) <= max_len
        assert inputs == items[inputs[0] - 1 : inputs[-1]]  # a contiguous slice of the sequence
        for j, target in enumerate(targets):
            if target:
                assert target == inputs[j] + 1  # the item after inputs[j]
                counted.append((target - 1, inputs[: j + 1]))
    assert [position for position, _ in counted] == list(range(1, length))
    for position, history in counted:
        recbole_history = items[max(0, position - max_len) : position]  # RecBole's row for this target
        assert history == recbole_history[len(recbole_history) - len(history) :]
        assert len(history) >= min(position, max_len - stride + 1)


def test_stride_one_gives_every_target_recboles_history() -> None:
    items = list(range(1, 13))
    rows = every_position_rows(items, max_len=4, stride=1)
    histories = [inputs[: j + 1] for inputs, targets in rows for j, t in enumerate(targets) if t]
    assert histories == [items[max(0, p - 4) : p] for p in range(1, 12)]


def test_a_sequence_no_longer_than_the_history_is_one_row() -> None:
    assert every_position_rows([5, 6, 7], max_len=3, stride=2) == [([5, 6], [6, 7])]
    assert every_position_rows([5], max_len=3, stride=2) == []


@pytest.mark.parametrize("stride", [0, 5])
def test_a_stride_outside_one_to_max_len_is_refused(stride: int) -> None:
    with pytest.raises(ValueError, match=f"stride {stride} must be between 1 and max_len 4"):
        every_position_rows([1, 2, 3], max_len=4, stride=stride)
