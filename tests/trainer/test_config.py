import pytest
from pydantic import ValidationError

from trainer.config import TrainConfig


def test_defaults_and_field_docs() -> None:
    cfg = TrainConfig()
    assert (cfg.hidden, cfg.heads, cfg.members, cfg.cold_share, cfg.ema_decay) == (64, 2, 3, 0.0, 0.999)
    assert all(field.description for field in TrainConfig.model_fields.values())
    assert TrainConfig.model_fields["heads"].description == "attention heads per block."


def test_it_is_frozen_and_refuses_unknown_keys() -> None:
    cfg = TrainConfig()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.hidden = 128
    with pytest.raises(ValidationError, match="hiden"):
        TrainConfig(hiden=128)


def test_heads_must_divide_hidden_and_the_error_names_both() -> None:
    with pytest.raises(ValidationError, match="hidden=64 is not divisible by heads=3"):
        TrainConfig(hidden=64, heads=3)
    assert TrainConfig(hidden=48, heads=3).heads == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("hidden", 0),
        ("layers", 0),
        ("heads", -1),
        ("max_len", 0),
        ("members", 0),
        ("epochs", 0),
        ("patience", 0),
        ("batch_size", 0),
        ("window_stride", 0),
        ("threads", 0),
        ("lr", 0.0),
        ("weight_decay", -0.1),
        ("action_weight", -1.0),
        ("seed", -1),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("id_dropout", 1.5),
        ("cold_share", 1.0),
        ("cold_share", -0.2),
        ("ema_decay", 1.0),
        ("ema_decay", -0.5),
        ("text_map_ridge", 0.0),
        ("text_map_scale", 1.5),
    ],
)
def test_out_of_range_values_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value", [("id_dropout", 1.0), ("ema_decay", 0.0), ("cold_share", 0.2), ("dropout", 0.0)]
)
def test_the_edges_that_mean_something_are_allowed(field: str, value: float) -> None:
    assert getattr(TrainConfig(**{field: value}), field) == value


def test_a_published_config_builds_the_same_config() -> None:
    cfg = TrainConfig(hidden=16, heads=4, cold_share=0.2, use_text=False)
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg
    assert list(cfg.model_dump()) == list(TrainConfig.model_fields)  # report.json's key order


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"use_text": False}, "text_lora_rank=8 fine-tunes the text model: it needs use_text"),
        ({"text_model": "SmolLM2-135M-Instruct"}, "tunes a sentence encoder, not SmolLM2-135M-Instruct"),
        ({"members": 3}, "it needs members=1, not 3"),
    ],
)
def test_a_tuned_text_model_needs_text_one_sentence_encoder_and_one_member(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(text_lora_rank=8, **settings)
    assert TrainConfig(text_lora_rank=8, members=1).text_lora_rank == 8


def test_picking_one_clock_field_needs_use_time() -> None:
    with pytest.raises(ValueError, match="time_inputs=hour picks a clock field: it needs use_time"):
        TrainConfig(time_inputs="hour")
    with pytest.raises(ValidationError, match="time_inputs"):
        TrainConfig(use_time=True, time_inputs="month")
    assert TrainConfig(use_time=True, time_inputs="weekday").time_inputs == "weekday"


def test_the_text_map_needs_text_and_its_scale_needs_the_map() -> None:
    with pytest.raises(ValueError, match=r"text_map_scale=0\.5 scales the text map: it needs text_map_ridge"):
        TrainConfig(text_map_scale=0.5)
    with pytest.raises(ValueError, match=r"text_map_ridge=3\.0 maps the item texts: it needs use_text"):
        TrainConfig(text_map_ridge=3.0, use_text=False)
    assert TrainConfig(text_map_ridge=3.0, text_map_scale=0.5).text_map_scale == 0.5
