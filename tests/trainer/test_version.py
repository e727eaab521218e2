from pathlib import Path

import numpy as np
import orjson
import pytest

from trainer.config import TrainConfig
from trainer.publish import versions
from trainer.version import (
    METRIC_KEYS,
    REPORT_FILE,
    TEXT_ADAPTER_FILE,
    AddedItems,
    ItemFiles,
    Report,
    cold_start_section,
    read_item_files,
    read_report,
    read_text_adapter,
    write_item_files,
    write_report,
    write_text_adapter,
)

SHIPPED = Path(__file__).parents[2] / "model_repository" / "recstream"


def report(seed: int = 1, cold_share: float = 0.0, cold_cases: int = 0, cold_hits: int = 0) -> Report:
    """A small report as the trainer writes it (no cold_start, ONNX parity or added items)."""
    metrics = dict.fromkeys(METRIC_KEYS, 0.1) | {"cold_cases": cold_cases}
    metrics |= {"cold_hr@10": cold_hits / cold_cases if cold_cases else float("nan"), "pop_cold_hr@10": 0.0}
    return Report.model_validate(
        {
            "model": "recstream",
            "created_at": 1.5,
            "parent_version": None,
            "metrics": metrics,
            "config": TrainConfig(seed=seed, cold_share=cold_share).model_dump(),
            "seed": seed,
            "text_model": None,
            "data": {
                "dataset": None,
                "events": "events.csv",
                "items": "items.csv",
                "max_users": None,
                "users": 3,
                "items_in_catalogue": 4,
                "events_total": 12,
                "order": "time",
                "split": "time: last event test",
                "tie_rule": "pessimistic",
                "withheld_items": [f"i{seed}"],
                "withheld_note": "withheld",
            },
            "training": {
                "train_seconds": 2.0,
                "eval_seconds": 0.5,
                "members": [{"seed": seed, "best_epoch": 1, "epochs_run": 2, "history": [{"epoch": 1, "loss": 3.5}]}],
                "early_stopping": "validation NDCG@10",
                "machine": "CPU",
            },
        }
    )


def test_a_report_reads_back_as_written_without_the_sections_it_lacks(tmp_path: Path) -> None:
    written = report()
    write_report(tmp_path / REPORT_FILE, written)
    raw = orjson.loads((tmp_path / REPORT_FILE).read_bytes())
    assert list(raw)[:3] == ["model", "created_at", "parent_version"] and raw["parent_version"] is None
    assert not {"cold_start", "onnx_parity_max_abs_diff", "added_items", "metrics_note"} & set(raw)
    assert raw["metrics"]["cold_hr@10"] is None  # NaN: null in JSON
    assert raw["training"]["members"][0]["history"] == [{"epoch": 1, "loss": 3.5}]  # the epoch stays an int
    read = read_report(tmp_path / REPORT_FILE)
    assert read.model_dump(exclude={"metrics"}) == written.model_dump(exclude={"metrics"})
    child = read.model_copy(
        update={"parent_version": "1", "added_items": AddedItems(count=1, item_ids=["n"], by="text"), "note": "x"}
    )
    write_report(tmp_path / "child.json", child)
    raw = orjson.loads((tmp_path / "child.json").read_bytes())
    assert list(raw)[-3:] == ["training", "added_items", "note"]  # the fields in order, then unknown keys
    assert raw["added_items"] == {"count": 1, "item_ids": ["n"], "by": "text"} and raw["note"] == "x"
    assert read_report(tmp_path / "child.json").added_items == AddedItems(count=1, item_ids=["n"], by="text")


def test_the_shipped_versions_report_reads_and_writes_back_byte_for_byte(tmp_path: Path) -> None:
    folder = SHIPPED / str(max(versions(SHIPPED)))
    shipped = read_report(folder / REPORT_FILE)
    assert shipped.model == "recstream" and shipped.data.users > 0 and shipped.training.members
    assert TrainConfig.model_validate(shipped.config).max_len == shipped.config["max_len"]  # still a valid config
    write_report(tmp_path / REPORT_FILE, shipped)
    assert (tmp_path / REPORT_FILE).read_bytes() == (folder / REPORT_FILE).read_bytes()


def test_a_report_from_before_the_dataset_was_recorded_still_reads(tmp_path: Path) -> None:
    old = report().model_dump()
    for key in ("dataset", "max_users", "order", "tie_rule"):
        del old["data"][key]
    del old["config"]["shuffle_ties"]  # a setting added since: not filled in with today's default
    (tmp_path / REPORT_FILE).write_bytes(orjson.dumps(old))
    read = read_report(tmp_path / REPORT_FILE)
    assert read.data.dataset is None and read.data.max_users is None and "shuffle_ties" not in read.config
    write_report(tmp_path / "again.json", read)
    assert orjson.loads((tmp_path / "again.json").read_bytes()) == orjson.loads(orjson.dumps(old))


def test_cold_start_pools_the_companions_cases() -> None:
    section = cold_start_section([report(1, 0.2, 173, 3), report(2, 0.2, 150, 9), report(3, 0.2, 7, 1)])
    assert section.metrics["cold_cases"] == 330 and section.metrics["cold_hits@10"] == 13
    assert section.metrics["cold_hr@10"] == pytest.approx(13 / 330)  # not the mean of the three rates
    assert section.metrics["pop_cold_hr@10"] == 0.0 and section.cold_share == 0.2
    assert [c.seed for c in section.companions] == [1, 2, 3]
    assert section.companions[1].metrics["cold_hr@10"] == pytest.approx(9 / 150)
    assert section.companions[2].withheld_items == ["i3"]


def test_cold_start_refuses_companions_that_do_not_measure_the_same_thing() -> None:
    with pytest.raises(ValueError, match="different shares"):
        cold_start_section([report(1, 0.2, 173, 3), report(2, 0.05, 49, 1)])
    with pytest.raises(ValueError, match="no cold test cases"):
        cold_start_section([report(1, 0.0, 0, 0)])


def test_item_files_round_trip_and_need_a_zero_padding_row(tmp_path: Path) -> None:
    table = np.vstack([np.zeros((1, 3)), np.arange(6).reshape(2, 3)])
    write_item_files(tmp_path, ItemFiles(table, ["a", "b"], ["A", None]))
    read = read_item_files(tmp_path)
    assert read.table.dtype == np.float32 and read.item_ids == ["a", "b"] and read.titles == ["A", None]
    np.testing.assert_array_equal(read.table, table)
    with pytest.raises(ValueError, match="zero padding row"):
        write_item_files(tmp_path, ItemFiles(table[1:], ["a", "b"], ["A", None]))


def test_the_text_adapter_is_read_only_for_the_text_model_it_was_trained_on(tmp_path: Path) -> None:
    adapter = {"weight": np.ones((2, 3), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)}
    with pytest.raises(ValueError, match=f"has no {TEXT_ADAPTER_FILE}"):
        read_text_adapter(tmp_path, "lm")
    write_text_adapter(tmp_path, adapter, "lm")
    assert (tmp_path / TEXT_ADAPTER_FILE).stat().st_mode & 0o777 == 0o644
    read, tuned = read_text_adapter(tmp_path, "lm")
    assert tuned is None and read.keys() == adapter.keys()
    np.testing.assert_array_equal(read["weight"], adapter["weight"])
    with pytest.raises(ValueError, match="trained on 'lm' text embeddings"):
        read_text_adapter(tmp_path, "other-lm")


def test_a_tuned_text_block_is_kept_apart_from_the_adapter(tmp_path: Path) -> None:
    adapter = {"weight": np.ones((2, 3), dtype=np.float32), "bias": np.zeros(2, dtype=np.float32)}
    block = {"dense.weight": np.full((3, 5), 2.0, np.float32), "LayerNorm.bias": np.ones(3, np.float32)}
    write_text_adapter(tmp_path, adapter, "lm", tuned=block)
    read, tuned = read_text_adapter(tmp_path, "lm")
    assert read.keys() == adapter.keys() and tuned is not None and tuned.keys() == block.keys()
    np.testing.assert_array_equal(tuned["dense.weight"], block["dense.weight"])
