"""The encoder's contract: left padding, masked-out events and causality behave as the server assumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import TEST, VALID, Catalog, build_dataset
from trainer.modeling import Ensemble, RecModel, Recommender
from trainer.sequences import eval_cases, training_windows

CFG = TrainConfig(hidden=16, layers=2, heads=2, max_len=10, dropout=0.0)


def make_model(seed: int = 0) -> RecModel:
    torch.manual_seed(seed)
    rng = np.random.default_rng(0)
    return RecModel(CFG, rng.normal(size=(12, 384)).astype(np.float32), np.ones(12, dtype=bool)).eval()


def window(items: list[int], times: list[float], length: int) -> dict[str, torch.Tensor]:
    pad = length - len(items)
    ages = [max(times) - t for t in times]
    return {
        "items": torch.tensor([[0] * pad + items]),
        "event_types": torch.tensor([[0] * pad + [1 + i % 2 for i in items]]),
        "age_s": torch.tensor([[0.0] * pad + ages]),
        "attention_mask": torch.tensor([[0] * pad + [1] * len(items)]),
    }


def test_left_padding_does_not_change_the_output() -> None:
    model = make_model()
    items, times = [3, 5, 7, 2], [0.0, 30.0, 4000.0, 4010.0]
    short, padded = model.encode(window(items, times, 4)), model.encode(window(items, times, 9))
    for a, b in zip(short, padded, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_masking_an_event_equals_removing_it() -> None:
    """What occlusion attribution relies on: a masked-out event is as if absent, also the newest one."""
    model = make_model()
    items, times = [3, 5, 7, 2, 9], [0.0, 30.0, 4000.0, 4010.0, 9000.0]
    for drop in (0, 2, 4):
        masked = window(items, times, 7)
        masked["attention_mask"][0, 2 + drop] = 0
        masked["items"][0, 2 + drop] = 0
        masked["event_types"][0, 2 + drop] = 0
        # ages of the shorter window are from its own newest event: only gaps between events matter
        removed = window(items[:drop] + items[drop + 1 :], times[:drop] + times[drop + 1 :], 7)
        for a, b in zip(model.encode(masked), model.encode(removed), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_encoder_is_causal() -> None:
    model = make_model()
    batch = window([3, 5, 7, 2], [0.0, 1.0, 2.0, 3.0], 4)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["items"][0, 3] = 11
    table = model.item_table()
    inputs = [model._inputs(b, table) for b in (batch, changed)]
    with torch.no_grad():
        before, after = (model.encoder.hidden_states(*x) for x in inputs)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_training_windows_target_every_train_event_once(tiny_dataset) -> None:
    withheld = np.zeros(len(tiny_dataset.catalog), dtype=bool)
    withheld[:3] = True
    windows = training_windows(tiny_dataset, withheld, max_len=5, stride=2)
    expected = []
    for user in tiny_dataset.users:
        train = user.items[(user.split == 0) & ~withheld[user.items - 1]]
        expected.extend(train[1:].tolist())  # every train event but the first is a target
    targets = windows["next_items"][windows["next_items"] > 0]
    assert sorted(targets.tolist()) == sorted(expected)
    assert not withheld[windows["items"][windows["attention_mask"] > 0] - 1].any()
    # within a window the target at position t is the input at position t + 1
    inputs, nexts = windows["items"], windows["next_items"]
    inner = (nexts[:, :-1] > 0) & (inputs[:, 1:] > 0)
    assert (nexts[:, :-1][inner] == inputs[:, 1:][inner]).all()


def test_training_windows_shuffle_only_events_that_share_a_timestamp() -> None:
    names = [f"i{i}" for i in range(9)]
    times = [0, 10, 10, 10, 10, 20, 20, 30, 40]  # events 1-4 and 5-6 are ties; 7 and 8 are validation and test
    dataset = build_dataset(["u"] * 9, names, ["view"] * 9, times, Catalog(names, names, names))
    no_withheld = np.zeros(9, dtype=bool)
    file_order = training_windows(dataset, no_withheld, max_len=10, stride=5)
    assert file_order["items"][0, -6:].tolist() == [1, 2, 3, 4, 5, 6]  # inputs: the 7 train events but the last
    orders = set()
    for seed in range(20):
        windows = training_windows(dataset, no_withheld, max_len=10, stride=5, rng=np.random.default_rng(seed))
        inputs, targets = windows["items"][0, -6:].tolist(), windows["next_items"][0, -6:].tolist()
        assert targets[:-1] == inputs[1:]  # the targets follow the new order
        events = inputs + targets[-1:]
        assert events[0] == 1 and sorted(events[1:5]) == [2, 3, 4, 5] and sorted(events[5:]) == [6, 7]
        assert windows["age_s"][0].tolist() == file_order["age_s"][0].tolist()
        orders.add(tuple(events))
    assert len(orders) > 10  # 4! * 2! = 48 orders are possible


def test_item_table_id_dropout_only_in_training() -> None:
    model = make_model()
    with torch.no_grad():
        model.unknown_id.normal_()  # trained, it is not zero
    text_only = model.new_item_adapter()(model.text)  # a row without id: text projection + unknown_id
    with torch.no_grad():
        table = model.item_table()
    assert torch.all(table[0] == 0)
    assert not torch.allclose(table[1:], text_only[1:])  # ids count in evaluation
    model.train()
    model.cfg = TrainConfig(**{**CFG.model_dump(), "id_dropout": 1.0})
    with torch.no_grad():
        torch.testing.assert_close(model.item_table()[1:], text_only[1:])


def test_text_map_recovers_id_embeddings_that_follow_the_text() -> None:
    """``fit_text_map``: where the trained items' id embeddings are a linear function of their text, an item
    without an id gets that function of its text (from the mean id embedding's place), through the item table
    and through the adapter that ``add-items`` uses alike; items with an id keep their rows."""
    rng = np.random.default_rng(1)
    texts = rng.normal(size=(40, 8)).astype(np.float32)
    has_id = np.arange(40) < 30  # 30 items to fit on, 10 without an id
    model = RecModel(CFG.model_copy(update={"text_map_ridge": 1e-6}), texts, has_id).eval()
    true_map = torch.from_numpy(rng.normal(size=(8, CFG.hidden)).astype(np.float32))  # [D, H]
    with torch.no_grad():
        model.unknown_id.normal_()
        model.id_emb.weight[1:] = torch.from_numpy(texts) @ true_map + 0.5  # every row; only has_id ones are read
        before = model.item_table()
    model.fit_text_map(1e-6)
    with torch.no_grad():
        after = model.item_table()
    torch.testing.assert_close(after[1:31], before[1:31])  # rows with an id: unchanged
    mean_id = model.id_emb.weight[1:31].mean(0)
    expected = before[31:] + model.id_emb.weight[31:] - mean_id  # the id embedding's offset from the mean
    torch.testing.assert_close(after[31:], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.new_item_adapter()(model.text[31:]), after[31:], atol=1e-5, rtol=1e-5)
    model.fit_text_map(1e-6, scale=0.5)
    with torch.no_grad():
        torch.testing.assert_close(model.item_table()[31:], (before[31:] + expected) / 2, atol=1e-4, rtol=1e-4)
        model.train()  # training reads no map (it is fitted after training)
        model.cfg = CFG.model_copy(update={"id_dropout": 0.0})
        torch.testing.assert_close(model.item_table()[31:], before[31:])


def test_withheld_items_are_not_negatives_of_the_training_loss() -> None:
    withheld = np.zeros(12, dtype=bool)
    withheld[5] = True
    torch.manual_seed(0)
    model = RecModel(CFG, np.random.default_rng(0).normal(size=(12, 384)).astype(np.float32), ~withheld, withheld)
    model.eval()  # no dropout: the loss is deterministic
    batch = window([3, 5, 7, 2], [0.0, 1.0, 2.0, 3.0], 4)
    batch["next_items"] = torch.tensor([[5, 7, 2, 4]])
    batch["next_types"] = torch.tensor([[1, 1, 2, 1]])
    before = model.loss(batch)
    with torch.no_grad():
        model.text[6] += 10.0  # item row 6 = withheld item 5 (0-based): change its vector a lot
    assert torch.isclose(model.loss(batch), before)
    with torch.no_grad():
        model.text[8] += 10.0  # a normal item's vector does change the loss
    assert not torch.isclose(model.loss(batch), before)


def two_rows() -> dict[str, torch.Tensor]:
    """Two windows of length 6 with a target item and next events."""
    rows = [window([3, 5, 7, 2], [0.0, 30.0, 4000.0, 4010.0], 6), window([1, 11], [0.0, 50.0], 6)]
    batch = {name: torch.cat([r[name] for r in rows]) for name in rows[0]}
    batch["target_items"] = torch.tensor([9, 4])
    batch["next_items"] = torch.tensor([[0, 0, 5, 7, 2, 9], [0, 0, 0, 0, 11, 4]])
    batch["next_types"] = torch.tensor([[0, 0, 1, 2, 1, 2], [0, 0, 0, 0, 2, 1]])
    return batch


def test_rec_model_and_ensemble_are_recommenders() -> None:
    """The contract that training and evaluation call: its shapes, and ``predict`` is the target's column of
    ``full_sort_predict``, for a model and an ensemble alike. Only the model is trained on ``loss``."""
    model = make_model()
    ensemble = Ensemble([make_model(0), make_model(1)]).eval()
    batch = two_rows()
    for recommender, width in ((model, CFG.hidden), (ensemble, 2 * CFG.hidden)):
        assert isinstance(recommender, Recommender)
        with torch.no_grad():
            scores = recommender.full_sort_predict(batch)
            user_vec, action_logits = recommender.encode(batch)
            target_scores = recommender.predict(batch)
        assert scores.shape == (2, 12) and user_vec.shape == (2, width) and action_logits.shape == (2, 4)
        torch.testing.assert_close(target_scores, scores[[0, 1], batch["target_items"] - 1])
    assert model.loss(batch).shape == ()
    with pytest.raises(NotImplementedError, match="not trained as one"):
        ensemble.loss(batch)


def test_ensemble_scores_are_the_mean_of_its_members_logits() -> None:
    """The served ensemble is one encoder and one item table, yet ranks by the members' mean logit."""
    members = [make_model(seed) for seed in (0, 1)]
    ensemble = Ensemble(members).eval()
    batch = window([3, 5, 7, 2], [0.0, 30.0, 4000.0, 4010.0], 6)
    with torch.no_grad():
        member_logits = torch.stack([m.full_sort_predict(batch) for m in members])  # [K, B, N]
        torch.testing.assert_close(ensemble.full_sort_predict(batch), member_logits.mean(0), atol=1e-5, rtol=1e-5)
        # a text-only row (what add-items appends) is every member's new-item row side by side
        text_row = ensemble.new_item_adapter()(members[0].text[1:2])
        expected = torch.cat([m.new_item_adapter()(m.text[1:2]) for m in members], dim=-1)
        torch.testing.assert_close(text_row, expected)


def test_evaluation_inputs_and_targets_follow_the_order_rule_not_the_file_order() -> None:
    """Same-second events: by item id (as a string), in the split, the evaluation cases and unshuffled windows."""
    names = ["d", "c", "b", "a", "e"]
    times = [0, 10, 10, 10, 10]  # the last four share their second; the file lists them in reverse id order
    catalog = Catalog(sorted(names), sorted(names), sorted(names))
    for order in (list(range(5)), [0, 3, 1, 4, 2]):
        dataset = build_dataset(["u"] * 5, [names[k] for k in order], ["view"] * 5, [times[k] for k in order], catalog)
        ids = [catalog.item_ids[i - 1] for i in dataset.users[0].items]
        assert ids == ["d", "a", "b", "c", "e"]
        test, valid = eval_cases(dataset, TEST, max_len=10), eval_cases(dataset, VALID, max_len=10)
        assert catalog.item_ids[test.arrays["target_items"][0] - 1] == "e"
        assert [catalog.item_ids[i - 1] for i in test.seen[0]] == ["d", "a", "b", "c"]
        assert catalog.item_ids[valid.arrays["target_items"][0] - 1] == "c"
        windows = training_windows(dataset, np.zeros(5, dtype=bool), max_len=10, stride=5)
        assert [catalog.item_ids[i - 1] for i in windows["items"][0][windows["attention_mask"][0] > 0]] == ["d", "a"]
