"""Training rows for SASRec's cross-entropy at every position (Klenitskiy & Vasilev 2023's SASRec+).

RecBole trains SASRec on one row per prefix of a user's train sequence and takes the loss at the row's last
position: on ML-1M at length 200 that is 982,089 rows of 200 steps an epoch. With a causal mask, position j of a
row sees exactly the row's items 0..j, so one row per sequence with the loss at every position holds the same
prediction terms (next item given the items before it) for every sequence not longer than the history length.
Longer sequences are cut into windows that end every ``stride`` items; each target is counted in exactly one
row, the first that holds it, and sees at least ``max_len - stride + 1`` items before it (RecBole: ``max_len``).
``stride=1`` gives every target RecBole's context. No RecBole import: the project's tests check this module.
"""

from __future__ import annotations

from collections.abc import Sequence

Row = tuple[list[int], list[int]]
"""(inputs, targets), equal lengths ≤ max_len: targets[j] is the item after inputs[j], 0 where not counted."""


def every_position_rows(items: Sequence[int], max_len: int, stride: int) -> list[Row]:
    """The rows of one train sequence of item ids (all > 0; 0 is padding and "not counted")."""
    if not 1 <= stride <= max_len:
        raise ValueError(f"stride {stride} must be between 1 and max_len {max_len}")
    inputs, targets = list(items[:-1]), list(items[1:])
    rows: list[Row] = []
    counted = 0  # targets[:counted] are in earlier rows
    while counted < len(inputs):
        end = min(len(inputs), max_len if counted == 0 else counted + stride)
        start = max(0, end - max_len)
        rows.append((inputs[start:end], [0] * (counted - start) + targets[counted:end]))
        counted = end
    return rows
