import threading
import time
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from recstream.cli import app as recstream_app
from trainer.cli import DatasetName, evaluation_dataset, load_data, train_config, wait_for_file
from trainer.data import ORDER_RULE
from trainer.evaluate import TIE_RULE


def test_wait_for_file_returns_once_the_companion_has_written_it(tmp_path: Path) -> None:
    report = tmp_path / "cold.json"
    writer = threading.Timer(0.3, report.write_text, args=("{}",))
    writer.start()
    started = time.monotonic()
    wait_for_file(report, timeout_s=10, poll_s=0.05)
    assert report.is_file() and 0.25 < time.monotonic() - started < 5


def test_wait_for_file_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter, match="did not appear within"):
        wait_for_file(tmp_path / "never.json", timeout_s=0.2, poll_s=0.05)


def test_popularity_command_prints_the_baseline_of_the_same_split(tiny_files, tiny_dataset) -> None:
    from trainer.evaluate import popularity_baseline

    events, items = tiny_files
    result = CliRunner().invoke(recstream_app, ["popularity", "--events", str(events), "--items", str(items), "--json"])
    assert result.exit_code == 0, result.output
    metrics = orjson.loads(result.stdout)
    expected = popularity_baseline(tiny_dataset)
    for key in ("pop_hr@10", "pop_ndcg@10", "pop_mrr@10", "pop_hr@10_all", "pop_ndcg@10_all", "cases"):
        assert metrics[key] == pytest.approx(expected[key])
    assert metrics["dataset"] is None and metrics["split"] == "test"


def test_events_and_a_named_dataset_do_not_mix(tiny_files) -> None:
    events, items = tiny_files
    with pytest.raises(typer.BadParameter, match="not both"):
        load_data(events, items, "ml-1m")
    with pytest.raises(typer.BadParameter, match="--items goes with --events"):
        load_data(None, items, "ml-1m")
    result = CliRunner().invoke(recstream_app, ["popularity", "--events", str(events), "--dataset", "ml-1m"])
    assert result.exit_code != 0


def test_train_on_a_named_dataset_records_it_and_the_user_subset(tiny_dataset, tmp_path: Path, monkeypatch) -> None:
    """``recstream train --dataset ml-1m --max-users N``: the named loader, the first N users, both recorded."""
    from tests.trainer.conftest import fake_embed_texts

    loaded = []

    def fake_load(data_dir=None, dataset="ml-100k"):
        loaded.append(dataset)
        return tiny_dataset

    monkeypatch.setattr("trainer.cli.load_movielens", fake_load)
    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    overrides = ["hidden=16", "layers=1", "heads=1", "max_len=8", "epochs=1", "members=1", "ema_decay=0", "threads=1"]
    report_path = tmp_path / "report.json"
    args = ["train", "--dataset", "ml-1m", "--max-users", "10", "--no-publish", "--report", str(report_path)]
    args += ["--faithfulness-users", "0", *(x for o in overrides for x in ("--set", o))]
    result = CliRunner().invoke(recstream_app, args)
    assert result.exit_code == 0, result.output
    assert loaded == ["ml-1m"]
    data = orjson.loads(report_path.read_bytes())["data"]
    assert data["dataset"] == "ml-1m" and data["max_users"] == 10 and data["users"] == 10
    assert data["order"] == ORDER_RULE and data["tie_rule"] == TIE_RULE
    assert "MovieLens-1M" in data["events"]


def test_a_missing_companion_report_keeps_the_trained_model(tiny_files, tmp_path: Path, monkeypatch) -> None:
    """``--cold-report`` that never appears (a companion run failed): the version is still published, without
    cold-start metrics, and the command says so and exits with 1 instead of throwing the training away."""
    from tests.trainer.conftest import fake_embed_texts

    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    events, items = tiny_files
    overrides = ["hidden=16", "layers=1", "heads=1", "max_len=8", "epochs=1", "members=1", "ema_decay=0", "threads=1"]
    missing = tmp_path / "cold.json"
    args = ["--model-repository", str(tmp_path / "repo"), "train", "--events", str(events), "--items", str(items)]
    args += ["--cold-report", str(missing), "--cold-report-wait-s", "0.1", "--report", str(tmp_path / "r.json")]
    args += ["--faithfulness-users", "0", *(x for o in overrides for x in ("--set", o))]
    result = CliRunner().invoke(recstream_app, args)
    assert result.exit_code == 1, result.output
    assert f"{missing} did not appear within 0 s" in result.output and "kept without them" in result.output
    published = tmp_path / "repo" / "recstream" / "1"
    assert (published / "encoder.onnx").is_file()
    assert "cold_start" not in orjson.loads((published / "report.json").read_bytes())
    assert orjson.loads((tmp_path / "r.json").read_bytes())["metrics"]["cases"] > 0


def test_set_parses_each_value_as_its_field_type() -> None:
    cfg = train_config(["hidden=128", "heads=4", "use_text=false", "lr=1e-3", "cold_share=0.2"])
    assert (cfg.hidden, cfg.heads, cfg.use_text, cfg.lr, cfg.cold_share) == (128, 4, False, 1e-3, 0.2)
    with pytest.raises(typer.BadParameter, match="expected KEY=VALUE with KEY one of hidden, layers"):
        train_config(["hiden=128"])
    with pytest.raises(typer.BadParameter, match="use_text"):
        train_config(["use_text=maybe"])


def test_train_refuses_a_bad_config_before_loading_data(monkeypatch) -> None:
    def no_load(*args, **kwargs):
        raise AssertionError("data loaded before the config was checked")

    monkeypatch.setattr("trainer.cli.load_movielens", no_load)
    result = CliRunner().invoke(recstream_app, ["train", "--no-publish", "--set", "hidden=64", "--set", "heads=3"])
    assert result.exit_code == 2, result.output
    assert "hidden=64 is not divisible by heads=3" in " ".join(result.output.replace("│", " ").split())  # unwrapped


def write_version_report(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_bytes(orjson.dumps({"data": data}))
    return folder


def test_evaluate_takes_the_versions_own_dataset(tmp_path: Path) -> None:
    old = write_version_report(tmp_path / "4", {"events": "movielens-100k (recbole 1.2.1 atomic files)"})
    one_m = write_version_report(tmp_path / "5", {"dataset": "ml-1m", "events": "MovieLens-1M (...)"})
    logged = write_version_report(tmp_path / "6", {"dataset": None, "events": "events.csv"})
    assert evaluation_dataset(old, None) == "ml-100k"  # versions from before the field were all ML-100K
    assert evaluation_dataset(one_m, None) == "ml-1m"
    assert evaluation_dataset(one_m, DatasetName["ml-1m"]) == "ml-1m"
    with pytest.raises(typer.BadParameter, match="trained on ml-1m, not ml-100k"):
        evaluation_dataset(one_m, DatasetName["ml-100k"])
    with pytest.raises(typer.BadParameter, match="give --events"):
        evaluation_dataset(logged, None)
    assert evaluation_dataset(logged, DatasetName["ml-100k"]) == "ml-100k"
