import pytest
import torch

from tests.trainer.conftest import TINY, fake_embed_texts
from trainer.data import VALID
from trainer.sequences import eval_cases
from trainer.train import train, validate


@pytest.fixture
def runs(tiny_dataset, tmp_path, monkeypatch) -> dict[float, object]:
    """The same seeded 4-epoch run with raw weights and with an exponential moving average of them."""
    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    return {
        decay: train(tiny_dataset, TINY.model_copy(update={"epochs": 4, "patience": 10, "ema_decay": decay}), tmp_path)
        for decay in (0.0, 0.9)
    }


def test_the_kept_weights_are_the_best_validated_ones(runs, tiny_dataset) -> None:
    cases = eval_cases(tiny_dataset, VALID, TINY.max_len)
    for result in runs.values():
        best = max(h["valid_ndcg@10_all"] for h in result.history)
        assert result.history[result.best_epoch - 1]["valid_ndcg@10_all"] == best
        again = validate(result.model, cases, result.withheld)["ndcg@10_all"]
        assert again == pytest.approx(best)


def test_ema_keeps_averaged_weights_not_the_raw_ones(runs) -> None:
    raw, averaged = runs[0.0].model, runs[0.9].model
    assert runs[0.0].history[0]["loss"] == runs[0.9].history[0]["loss"]  # same seed, same training steps
    different = [
        name
        for (name, a), (_, b) in zip(raw.named_parameters(), averaged.named_parameters(), strict=True)
        if not torch.allclose(a, b)
    ]
    assert different


def test_a_time_limit_stops_after_the_epoch_that_reaches_it(tiny_dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    limited = TINY.model_copy(update={"epochs": 4, "patience": 10, "max_train_min": 1e-9})
    result = train(tiny_dataset, limited, tmp_path)
    assert (result.epochs_run, result.best_epoch, len(result.history)) == (1, 1, 1)
    unlimited = train(tiny_dataset, limited.model_copy(update={"max_train_min": 0.0}), tmp_path)
    assert unlimited.epochs_run == 4
