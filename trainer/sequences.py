"""User sequences -> left-padded model batches: sliding training windows and evaluation histories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data import TRAIN, Dataset, UserSequence

Arrays = dict[str, np.ndarray]

#: The encoder.onnx contract (docs/architecture.md), in the order of ``SequenceEncoder.forward``. A version
#: trained with ``use_time`` takes ``TIME_INPUTS`` too, one trained with ``use_context`` ``CONTEXT_INPUT``
#: (:func:`encoder_input_names`); older versions lack them.
ENCODER_INPUTS = ("item_vecs", "event_types", "age_s", "attention_mask")
TIME_INPUTS = ("hour", "weekday")
CONTEXT_INPUT = "context"
ENCODER_OUTPUTS = ("user_vec", "action_logits")
#: The window fields of a batch: ``items`` (catalogue rows) become ``item_vecs`` through the item table.
WINDOW_FIELDS = ("items", "event_types", "age_s", "attention_mask", *TIME_INPUTS, CONTEXT_INPUT)

SECONDS_PER_DAY = 86_400


def encoder_input_names(use_time: bool, use_context: bool = False) -> tuple[str, ...]:
    """The inputs of an encoder trained with or without ``TrainConfig.use_time`` and ``use_context``, in
    ``forward``'s order."""
    return (*ENCODER_INPUTS, *(TIME_INPUTS if use_time else ()), *((CONTEXT_INPUT,) if use_context else ()))


def clock(timestamps: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 ``hour`` (1 + hour of the day, 1..24) and ``weekday`` (1 + day of the week, Monday = 1), both in
    UTC, of epoch-second ``timestamps`` [B, L]; 0 where ``mask`` is 0. The served model.py computes the same from
    its TIMESTAMPS input (a test compares them)."""
    days = np.floor_divide(timestamps, SECONDS_PER_DAY)
    hour = 1 + ((timestamps - days * SECONDS_PER_DAY) // 3600).astype(np.int64)
    weekday = 1 + ((days.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
    return hour * mask, weekday * mask


def left_pad(rows: list[np.ndarray], length: int, dtype: type, tail: tuple[int, ...] = ()) -> np.ndarray:
    """``[len(rows), length, *tail]``: each row's last ``length`` values (each of shape ``tail``), right-aligned,
    zeros before."""
    out = np.zeros((len(rows), length, *tail), dtype=dtype)
    for i, row in enumerate(rows):
        tail = row[-length:] if length else row[:0]
        out[i, length - len(tail) :] = tail
    return out


def window_arrays(
    items: list[np.ndarray], types: list[np.ndarray], times: list[np.ndarray], contexts: list[np.ndarray], length: int
) -> Arrays:
    """Model inputs for windows (each oldest first): ``WINDOW_FIELDS`` [B, L], ``context`` [B, L, K] (K context
    keys; ``contexts`` are each window's [n, K] tokens)."""
    times_padded = left_pad([t - t[-1] for t in times], length, np.float64)  # [B, L], <= 0
    mask = left_pad([np.ones(len(i), np.int64) for i in items], length, np.int64)
    hour, weekday = clock(left_pad(times, length, np.float64), mask)
    keys = contexts[0].shape[1] if contexts else 0
    return {
        "items": left_pad(items, length, np.int64),
        "event_types": left_pad(types, length, np.int64),
        "age_s": (-times_padded * mask).astype(np.float32),
        "attention_mask": mask,
        "hour": hour,
        "weekday": weekday,
        CONTEXT_INPUT: left_pad(contexts, length, np.int64, (keys,)),
    }


def training_windows(
    dataset: Dataset, withheld: np.ndarray, max_len: int, stride: int, rng: np.random.Generator | None = None
) -> Arrays:
    """Sliding windows over each user's train events (withheld items' events removed): the input is events
    ``s..s+L-1``, the targets ``next_items``/``next_types`` the events one step later. Windows overlap by
    ``max_len - stride`` events; only the first window of a user keeps targets in the overlap, so every train
    event is a target exactly once. Events come in the dataset's order (the order rule of ``trainer.data``:
    timestamp, then item id). With ``rng`` (``TrainConfig.shuffle_ties``, a training augmentation), events with
    the same timestamp are put in a random order instead: the log's order among them says nothing about the order
    they happened in. Evaluation inputs and targets (:func:`eval_cases`) never shuffle: they follow the rule."""
    items, types, times, contexts, next_items, next_types = [], [], [], [], [], []
    for user in dataset.users:
        (keep,) = np.nonzero((user.split == TRAIN) & ~withheld[user.items - 1])
        if rng is not None:
            keep = keep[np.lexsort((rng.random(len(keep)), user.timestamps[keep]))]
        seq_items, seq_types, seq_times = user.items[keep], user.event_types[keep], user.timestamps[keep]
        seq_context = user.context[keep]
        n_inputs = len(seq_items) - 1
        if n_inputs < 1:
            continue
        last_start = max(n_inputs - max_len, 0)
        starts = sorted({*range(0, last_start + 1, stride), last_start})
        covered = 0  # train targets 1..covered already have a window
        for start in starts:
            end = min(start + max_len, n_inputs)
            targets = seq_items[start + 1 : end + 1].copy()
            target_types = seq_types[start + 1 : end + 1].copy()
            already = max(covered - start, 0)
            targets[:already], target_types[:already] = 0, 0
            covered = end
            items.append(seq_items[start:end])
            types.append(seq_types[start:end])
            times.append(seq_times[start:end])
            contexts.append(seq_context[start:end])
            next_items.append(targets)
            next_types.append(target_types)
    arrays = window_arrays(items, types, times, contexts, max_len)
    arrays["next_items"] = left_pad(next_items, max_len, np.int64)
    arrays["next_types"] = left_pad(next_types, max_len, np.int64)
    return arrays


@dataclass(frozen=True)
class EvalCases:
    """One case per user that has an event with the wanted split label."""

    arrays: Arrays  # model inputs (history truncated to max_len) + target_items, target_types [B]
    seen: list[np.ndarray]  # per case: every item the user had before the target (for exclusion)
    user_ids: list[str]


def eval_cases(dataset: Dataset, split: int, max_len: int) -> EvalCases:
    """History = every event before the user's ``split`` event in the order rule of ``trainer.data``
    (timestamp, then item id; the same order the split used and the stream window keeps), truncated to the last
    ``max_len``."""
    picked: list[tuple[UserSequence, int]] = []
    for user in dataset.users:
        (positions,) = np.nonzero(user.split == split)
        if len(positions) and positions[0] > 0:
            picked.append((user, int(positions[0])))
    arrays = window_arrays(
        [u.items[:t] for u, t in picked],
        [u.event_types[:t] for u, t in picked],
        [u.timestamps[:t] for u, t in picked],
        [u.context[:t] for u, t in picked],
        max_len,
    )
    arrays["target_items"] = np.array([u.items[t] for u, t in picked], dtype=np.int64)
    arrays["target_types"] = np.array([u.event_types[t] for u, t in picked], dtype=np.int64)
    return EvalCases(arrays, [u.items[:t] for u, t in picked], [u.user_id for u, _ in picked])


def encoder_inputs(arrays: Arrays, table: np.ndarray, rows: slice | np.ndarray) -> dict[str, np.ndarray]:
    """Every encoder input for ``rows`` of window ``arrays`` (an encoder reads those it takes: names from
    :func:`encoder_input_names`): item rows looked up in ``table`` [N+1, H]."""
    inputs = {name: arrays[name][rows] for name in WINDOW_FIELDS[1:]}
    return {"item_vecs": table[arrays["items"][rows]], **inputs}
