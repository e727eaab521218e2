"""Tiny end to end: train one epoch -> export (ONNX parity) -> publish -> evaluate the published version ->
add items."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch
from typer.testing import CliRunner, Result

from recstream.cli import app as recstream_app
from tests.trainer.conftest import TINY, fake_embed_texts
from trainer.catalog import add_items
from trainer.config import TrainConfig
from trainer.data import TEST, VALID, Catalog, default_cache_dir, load_event_log
from trainer.evaluate import Encoder, case_ranks, evaluate_version, load_version, onnx_encoder
from trainer.export import check_parity, export_encoder, export_version, item_table, torch_encoder
from trainer.modeling import Ensemble, RecModel
from trainer.publish import publish, versions
from trainer.sequences import encoder_input_names, encoder_inputs, eval_cases
from trainer.text import MINILM, TEXT_MODELS, TextModel, embed_texts
from trainer.train import batched, train, train_report
from trainer.version import cold_start_section

METRICS = ("ndcg@10", "hr@10", "mrr@10", "ndcg@10_all", "hr@10_all", "mrr@10_all", "cold_hr@10", "next_action_auc")


@pytest.fixture(scope="module")
def repository(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    (repo / "recstream").mkdir()
    (repo / "recstream" / "model.py").write_text("# the shared python backend\n")
    publish(repo / "recstream", lambda out: export_version(trained.model, trained.dataset, trained.report, out))
    return repo


def test_report_has_every_metric(trained) -> None:
    metrics = trained.report.metrics
    for key in METRICS:
        assert key in metrics
    assert 0 <= metrics["hr@10_all"] <= metrics["hr@10"] <= 1  # excluding earlier items only helps
    assert trained.report.metrics["cold_cases"] == int(
        trained.withheld[eval_cases(trained.dataset, TEST, 8).arrays["target_items"] - 1].sum()
    )
    assert set(trained.report.metrics["faithfulness"]) >= {"mean_logit_drop_top", "mean_logit_drop_random"}


def test_published_version_folder(repository: Path, trained) -> None:
    version = repository / "recstream" / "1"
    assert sorted(p.name for p in version.iterdir()) == sorted(
        ["encoder.onnx", "item_embeddings.npy", "items.json", "report.json", "model.py", "text_adapter.safetensors"]
    )
    assert os.readlink(version / "model.py") == "../model.py"
    assert (version / "model.py").read_text().startswith("# the shared")
    table = np.load(version / "item_embeddings.npy")
    items = orjson.loads((version / "items.json").read_bytes())
    assert table.dtype == np.float32 and table.shape == (len(items["item_ids"]) + 1, TINY.hidden)
    assert not table[0].any()
    assert items["item_ids"] == trained.dataset.catalog.item_ids and items["titles"][0] == "Item 0"
    assert not list((repository / "recstream").glob(".tmp-*"))


def test_onnx_matches_torch_on_padded_and_holed_windows(repository: Path, trained) -> None:
    table = item_table(trained.model)
    inputs = encoder_inputs(eval_cases(trained.dataset, TEST, 12).arrays, table, slice(0, 5))  # L=12 > max_len
    inputs["attention_mask"][:, -1] = 0  # mask out the newest event (as occlusion does)
    inputs["attention_mask"][:, 4] = 0
    for name in ("item_vecs", "event_types", "age_s"):
        inputs[name][:, 4] = 0
        inputs[name][:, -1] = 0
    expected = torch_encoder(trained.model)(inputs)
    got = onnx_encoder(repository / "recstream" / "1" / "encoder.onnx")(inputs)
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, atol=1e-4)


def untrained_ensemble(trained) -> Ensemble:
    """Two fresh members on the tiny catalogue (fake text vectors, an id embedding for every item)."""
    text = fake_embed_texts(trained.dataset.catalog.texts, Path())
    members = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        members.append(RecModel(TINY, text, np.ones(len(text), dtype=bool)))
    return Ensemble(members).eval()


@pytest.mark.parametrize("kind", ["trained model", "untrained ensemble"])
def test_full_sort_predict_ranks_every_case_as_its_exported_encoder(kind, repository, trained, tmp_path) -> None:
    """Evaluating an in-memory ``Recommender`` (``full_sort_predict``, then the shared ranking routine) puts
    every test target at the rank its published encoder.onnx and item table give it, earlier items excluded
    or not: training-time evaluation measures what is served."""
    if kind == "trained model":
        model, folder = trained.model, repository / "recstream" / "1"
    else:
        model, folder = untrained_ensemble(trained), tmp_path / "ensemble"
        folder.mkdir()
        export_version(model, trained.dataset, trained.report, folder)
    cases = eval_cases(trained.dataset, TEST, TINY.max_len)
    in_memory = case_ranks(batched(model.full_sort_predict)(cases.arrays), cases)
    served = case_ranks(load_version(folder, trained.dataset).full_sort(cases.arrays), cases)
    for ours, theirs in zip(in_memory, served, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert len(set(in_memory[0].tolist())) > 5  # the ranks differ between cases: not a constant scorer


def test_evaluating_the_published_version_reproduces_the_report(repository: Path, trained) -> None:
    served = evaluate_version(repository / "recstream" / "1", trained.dataset)
    for key in METRICS:
        assert served[key] == pytest.approx(trained.report.metrics[key], abs=1e-6, nan_ok=True)


def test_a_version_trained_on_every_item_reports_its_companions_cold_start(
    repository: Path, trained, tmp_path: Path
) -> None:
    version = tmp_path / "every-item"
    shutil.copytree(repository / "recstream" / "1", version, symlinks=True)
    report = orjson.loads((version / "report.json").read_bytes())
    report["data"]["withheld_items"] = []
    report["cold_start"] = cold_start_section([trained.report]).model_dump()
    (version / "report.json").write_bytes(orjson.dumps(report))
    served = evaluate_version(version, trained.dataset)
    assert served["cold_cases"] == 0  # nothing is cold for this version itself
    assert served["cold_hr@10"] == trained.report.metrics["cold_hr@10"]
    assert served["pop_cold_hr@10"] == trained.report.metrics["pop_cold_hr@10"]
    cases = trained.report.metrics["cold_cases"]
    assert served["cold_hr@10_source"] == f"companion models, 10% of items withheld, {cases} cold cases"
    low, high = served["cold_hr@10_ci95"]
    assert low <= served["cold_hr@10"] <= high
    assert served["random_cold_hr@10"] == pytest.approx(trained.report.metrics["random_cold_hr@10"]), (
        "the random baseline of the companion's own cold cases"
    )


def test_publish_takes_the_next_number_and_never_overwrites(tmp_path: Path) -> None:
    model_dir = tmp_path / "recstream"
    assert publish(model_dir, lambda out: (out / "a").write_text("1")).name == "1"
    (model_dir / "3").mkdir()
    (model_dir / "3" / "keep").write_text("mine")
    assert publish(model_dir, lambda out: (out / "a").write_text("2")).name == "4"
    assert (model_dir / "3" / "keep").read_text() == "mine"
    assert (model_dir / "1" / "a").read_text() == "1"

    def broken(out: Path) -> None:
        (out / "a").write_text("half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        publish(model_dir, broken)
    assert versions(model_dir) == [1, 3, 4]
    assert not list(model_dir.glob(".tmp-*"))


def test_add_items_publishes_a_version_with_more_rows(repository: Path, trained, monkeypatch) -> None:
    monkeypatch.setattr("trainer.catalog.embed_texts", fake_embed_texts)
    parent = repository / "recstream" / "1"
    new = Catalog(["n1", "n2"], ["New one", None], ["New one fresh", "Second"])
    child = add_items(parent, new)
    assert child.name == str(max(versions(repository / "recstream")))
    before, after = np.load(parent / "item_embeddings.npy"), np.load(child / "item_embeddings.npy")
    assert after.shape == (before.shape[0] + 2, before.shape[1])
    np.testing.assert_array_equal(after[: len(before)], before)
    with torch.no_grad():
        expected = trained.model.new_item_adapter()(torch.from_numpy(fake_embed_texts(new.texts, Path()))).numpy()
    np.testing.assert_allclose(after[-2:], expected, atol=1e-5)
    items = orjson.loads((child / "items.json").read_bytes())
    assert items["item_ids"][-2:] == ["n1", "n2"] and items["titles"][-2:] == ["New one", None]
    assert (child / "encoder.onnx").read_bytes() == (parent / "encoder.onnx").read_bytes()
    assert orjson.loads((child / "report.json").read_bytes())["parent_version"] == "1"
    assert os.readlink(child / "model.py") == "../model.py"
    with pytest.raises(ValueError, match="already in the catalogue"):
        add_items(parent, Catalog(["i1"], [None], ["again"]))


def test_add_items_embeds_with_the_text_model_the_version_was_trained_on(tiny_dataset, tmp_path, monkeypatch) -> None:
    """A version trained on all-mpnet-base-v2's 768-d vectors records that model in report.json and its text
    adapter, and add-items embeds the new items with it (a MiniLM vector would not fit the adapter)."""
    used: list[str] = []

    def recording(texts: list[str], cache_dir: Path, model: TextModel = MINILM, **options: object) -> np.ndarray:
        used.append(model.name)
        return fake_embed_texts(texts, cache_dir, model, **options)

    monkeypatch.setattr("trainer.train.embed_texts", recording)
    monkeypatch.setattr("trainer.catalog.embed_texts", recording)
    cfg = TINY.model_copy(update={"text_model": "all-mpnet-base-v2"})
    model, report = train_report(tiny_dataset, cfg, None, None, faithfulness_users=0)
    mpnet = TEXT_MODELS["all-mpnet-base-v2"]
    assert report.text_model == mpnet.name and model.text_adapter.in_features == 768
    (tmp_path / "recstream").mkdir()
    parent = publish(tmp_path / "recstream", lambda out: export_version(model, tiny_dataset, report, out))
    new = Catalog(["n1"], ["New one"], ["New one fresh"])
    child = add_items(parent, new)
    assert used == [mpnet.name, mpnet.name]
    with torch.no_grad():
        expected = model.new_item_adapter()(torch.from_numpy(fake_embed_texts(new.texts, Path(), mpnet))).numpy()
    np.testing.assert_allclose(np.load(child / "item_embeddings.npy")[-1:], expected, atol=1e-5)


def copies_of_the_withheld(model, report, dataset, tmp_path: Path) -> tuple[np.ndarray, list[int], list[str]]:
    """Publish the model, then add-items an item with each withheld item's text: (the child's item table, the
    withheld items' catalogue indices, their texts); row ``1 + i`` is withheld item i's, the last rows the copies."""
    (tmp_path / "recstream").mkdir()
    parent = publish(tmp_path / "recstream", lambda out: export_version(model, dataset, report, out))
    cold = [dataset.catalog.item_ids.index(item) for item in report.data.withheld_items]
    texts = [dataset.catalog.texts[i] for i in cold]
    child = add_items(parent, Catalog([f"copy-{i}" for i in cold], [None] * len(cold), texts))
    return np.load(child / "item_embeddings.npy"), cold, texts


def test_a_tuned_text_model_embeds_added_items_as_it_embedded_the_cold_ones(tiny_dataset, tmp_path) -> None:
    """With ``text_lora_rank`` the real MiniLM's top is trained with the recommender: the version stores the
    tuned block, and add-items gives an item with a withheld item's text exactly that item's served row (both
    are text only), which the frozen MiniLM would not give."""
    cfg = TINY.model_copy(update={"text_lora_rank": 4, "lr": 2e-2})
    model, report = train_report(tiny_dataset, cfg, None, None, faithfulness_users=0)
    assert model.text_top is not None and model.text_top.lora_b.abs().max() > 0
    rows, cold, texts = copies_of_the_withheld(model, report, tiny_dataset, tmp_path)
    np.testing.assert_allclose(rows[-len(cold) :], rows[[1 + i for i in cold]], atol=1e-4)
    with torch.no_grad():
        frozen = model.new_item_adapter()(torch.from_numpy(embed_texts(texts, default_cache_dir()))).numpy()
    assert np.abs(frozen - rows[-len(cold) :]).max() > 1e-3


def test_the_text_map_scores_withheld_and_added_items_alike(tiny_dataset, tmp_path, monkeypatch) -> None:
    """``text_map_ridge``: the map fitted after training moves the withheld items' served rows off the plain
    text-only row, and add-items gives an item with a withheld item's text exactly that row."""
    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    monkeypatch.setattr("trainer.catalog.embed_texts", fake_embed_texts)
    model, report = train_report(tiny_dataset, TINY.model_copy(update={"text_map_ridge": 1.0}), None, None, 0)
    assert report.config["text_map_ridge"] == 1.0 and model.text_map_weight.abs().max() > 0
    rows, cold, _ = copies_of_the_withheld(model, report, tiny_dataset, tmp_path)
    np.testing.assert_allclose(rows[-len(cold) :], rows[[1 + i for i in cold]], atol=1e-5)
    with torch.no_grad():
        plain = model.text_adapter(model.text[[1 + i for i in cold]]) + model.unknown_id  # the row without a map
    assert np.abs(plain.numpy() - rows[-len(cold) :]).max() > 1e-3


def evaluate_cli(repository: Path, tiny_files: tuple[Path, Path], *options: str, env: bool = False) -> Result:
    """``recstream --model-repository R evaluate --version 1`` on the tiny repository and data, as users call it
    (or with RECSTREAM_MODEL_REPOSITORY=R: one option and one variable for the setting in every command)."""
    events, items = tiny_files
    data = ["--events", str(events), "--items", str(items)]
    where = [] if env else ["--model-repository", str(repository)]
    variables = {"RECSTREAM_MODEL_REPOSITORY": str(repository)} if env else None
    return CliRunner().invoke(recstream_app, [*where, "evaluate", "--version", "1", *data, *options], env=variables)


def test_cli_evaluate_json_prints_one_object(repository: Path, tiny_files) -> None:
    """stdout is exactly one JSON object, logs go to stderr."""
    result = evaluate_cli(repository, tiny_files, "--json")
    assert result.exit_code == 0, result.output
    metrics = orjson.loads(result.stdout)
    assert set(METRICS) <= set(metrics)


def test_cli_evaluate_valid_split_scores_the_validation_events(repository: Path, trained, tiny_files) -> None:
    result = evaluate_cli(repository, tiny_files, "--split", "valid", "--json", env=True)
    assert result.exit_code == 0, result.output
    expected = evaluate_version(repository / "recstream" / "1", trained.dataset, split=VALID)
    assert orjson.loads(result.stdout)["ndcg@10_all"] == pytest.approx(expected["ndcg@10_all"])
    assert expected["cases"] == sum(1 for u in trained.dataset.users if (u.split == VALID).any())
    assert expected["mrr@10_all"] != evaluate_version(repository / "recstream" / "1", trained.dataset)["mrr@10_all"]


def exported_encoder(cfg: TrainConfig, trained, path: Path) -> tuple[dict[str, np.ndarray], Encoder]:
    """An untrained model of ``cfg`` (torch seed 0) exported to ``path``, checked against torch and for the inputs
    ``cfg`` names: its first 8 test windows as encoder inputs, and the ONNX encoder."""
    import onnxruntime as ort

    text = fake_embed_texts(trained.dataset.catalog.texts, Path())
    torch.manual_seed(0)
    model = RecModel(cfg, text, np.ones(len(text), dtype=bool)).eval()
    inputs = encoder_inputs(eval_cases(trained.dataset, TEST, cfg.max_len).arrays, item_table(model), slice(0, 8))
    export_encoder(model, path, inputs)
    names = tuple(i.name for i in ort.InferenceSession(str(path)).get_inputs())
    assert names == encoder_input_names(cfg.use_time, cfg.use_context)
    assert check_parity(model, path, [inputs]) <= 1e-4
    return inputs, onnx_encoder(path)


def later(inputs: dict[str, np.ndarray], field: str, period: int) -> dict[str, np.ndarray]:
    """Every event one hour (``field="hour"``, period 24) or one day (``"weekday"``, 7) later; padding stays 0."""
    return {**inputs, field: np.where(inputs[field] > 0, inputs[field] % period + 1, 0)}


def test_only_a_use_time_encoder_takes_the_hour_and_weekday(repository: Path, trained, tmp_path: Path) -> None:
    """A model trained with ``use_time`` exports ``hour`` and ``weekday`` inputs (checked against torch), and
    they change its user vector; a model without (the default, and versions 4-6) exports the four inputs only."""
    import onnxruntime as ort

    plain = ort.InferenceSession(str(repository / "recstream" / "1" / "encoder.onnx"))
    assert tuple(i.name for i in plain.get_inputs()) == encoder_input_names(use_time=False)
    assert encoder_input_names(use_time=True) == (*encoder_input_names(use_time=False), "hour", "weekday")

    cfg = TrainConfig.model_validate({**TINY.model_dump(), "use_time": True})
    inputs, run = exported_encoder(cfg, trained, tmp_path / "encoder.onnx")
    assert not np.allclose(run(later(inputs, "hour", 24))[0], run(inputs)[0], atol=1e-4)


def test_an_encoder_reading_one_clock_field_ignores_the_other(trained, tmp_path: Path) -> None:
    """``time_inputs`` (an ablation) keeps both clock inputs in the export; moving every event by an hour moves
    the user vector only of an encoder that reads the hour, and by a day only of one that reads the weekday."""
    moved = {}
    for fields in ("hour", "weekday"):
        cfg = TINY.model_copy(update={"use_time": True, "time_inputs": fields})
        inputs, run = exported_encoder(cfg, trained, tmp_path / f"clock-{fields}.onnx")
        for name, period in (("hour", 24), ("weekday", 7)):
            moved[fields, name] = not np.allclose(run(later(inputs, name, period))[0], run(inputs)[0], atol=1e-5)
    assert moved == {
        ("hour", "hour"): True,
        ("hour", "weekday"): False,
        ("weekday", "hour"): False,
        ("weekday", "weekday"): True,
    }


def test_without_gaps_the_encoder_ignores_when_events_happened(trained, tmp_path: Path) -> None:
    """``use_gaps=False`` (an ablation) exports the same inputs, and moving the events in time leaves its user
    vector unchanged; the default encoder's moves."""
    moved = []
    for use_gaps in (False, True):
        inputs, run = exported_encoder(TINY.model_copy(update={"use_gaps": use_gaps}), trained, tmp_path / "gaps.onnx")
        spread = {**inputs, "age_s": inputs["age_s"] * 1000}  # the same order, every gap 1000 times longer
        moved.append(not np.allclose(run(spread)[0], run(inputs)[0], atol=1e-5))
    assert moved == [False, True]


def test_a_use_context_model_reads_each_event_s_context(
    trained, tiny_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event log's context becomes the ``context`` input [B, L, C] of a ``use_context`` model: exported
    (checked against torch) with context.json, read back by ``load_version`` and evaluated; each known value moves
    the user vector; a value only the test events carry never trains, so its vector stays zero (as unknown, 0)."""
    import onnxruntime as ort

    events, items = tiny_files
    rows = list(csv.DictReader(events.open(newline="")))
    last = {row["user_id"]: row["timestamp"] for row in rows}  # the file lists each user's events in time order
    for row in rows:  # a device per user, a region per event; region 9 only on each user's (test) last event
        region = "9" if row["timestamp"] == last[row["user_id"]] else str(int(row["timestamp"]) // 60 % 3)
        row["context"] = {"device": ["tv", "mobile"][int(row["user_id"][1:]) % 2], "region": region, "x": [1]}
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(row) for row in rows))
    dataset = load_event_log(log, items)
    assert dataset.context.values == {"device": ("mobile", "tv"), "region": ("0", "1", "2", "9")}

    monkeypatch.setattr("trainer.train.embed_texts", fake_embed_texts)
    cfg = TrainConfig.model_validate({**TINY.model_dump(), "use_context": True})
    model = train(dataset, cfg, tmp_path).model
    weights = model.encoder.context_emb.weight.detach().numpy()  # [1 + 6, H]: 0, then mobile, tv, 0, 1, 2, 9
    assert not weights[0].any() and not weights[6].any()  # padding, and region 9: never an input in training
    assert all(weights[token].any() for token in range(1, 6))

    out = tmp_path / "version"
    out.mkdir()
    export_version(model, dataset, trained.report, out)
    session = ort.InferenceSession(str(out / "encoder.onnx"))
    assert tuple(i.name for i in session.get_inputs()) == (*encoder_input_names(use_time=False), "context")
    version = load_version(out, load_event_log(log, items))
    assert version.dataset.context == dataset.context
    assert evaluate_version(out, dataset)["cases"] == len(dataset.users)

    inputs = encoder_inputs(eval_cases(dataset, TEST, cfg.max_len).arrays, item_table(model), slice(0, 8))
    assert check_parity(model, out / "encoder.onnx", [inputs]) <= 1e-4
    run = onnx_encoder(out / "encoder.onnx")
    swapped = inputs["context"].copy()  # every event's device token mobile <-> tv
    swapped[..., 0] = np.where(swapped[..., 0] > 0, 3 - swapped[..., 0], 0)
    assert not np.allclose(run({**inputs, "context": swapped})[0], run(inputs)[0], atol=1e-4)
