"""model.py served by the real tritonserver (tiny generated version), checked against a plain reference."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from recstream.triton import _pytriton_dir
from stream.schemas import EVENT_TYPES, WindowEvent
from stream.settings import Settings
from stream.triton_client import TritonScorer
from tests.model_repository.tiny_version import MODEL_DIR, item_ids, serve

pytestmark = pytest.mark.integration

IDS = item_ids()
T0 = 1_700_000_000.0

#: config.pbtxt's attribution_max_events: the newest events that occlusion attributes
ATTRIBUTED_EVENTS = int(
    re.search(r'"attribution_max_events" value: \{ string_value: "(\d+)"', (MODEL_DIR / "config.pbtxt").read_text())[1]
)


def _inputs(ids: list[list[str]], types: list[list[str]], stamps: list[list[float]]) -> list[grpcclient.InferInput]:
    arrays = [
        ("ITEM_IDS", np.array(ids, dtype=object), "BYTES"),
        ("EVENT_TYPES", np.array(types, dtype=object), "BYTES"),
        ("TIMESTAMPS", np.array(stamps, dtype=np.float64), "FP64"),
    ]
    inputs = []
    for name, array, dtype in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def infer(settings: Settings, ids: list[list[str]], types: list[list[str]], stamps: list[list[float]]) -> dict:
    with grpcclient.InferenceServerClient(settings.triton_url) as client:
        result = client.infer(settings.model_name, _inputs(ids, types, stamps))
    names = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION", "ATTRIBUTION", "INPUT_TITLES")
    return {name: result.as_numpy(name) for name in names}


def pad(row: list, length: int, value: object) -> list:
    return [value] * (length - len(row)) + row


class Reference:
    """What the served model must compute, from the version's files, one window (real events only) at a time."""

    def __init__(self, version_dir: Path) -> None:
        self.embeddings = np.load(version_dir / "item_embeddings.npy")
        items = json.loads((version_dir / "items.json").read_bytes())
        self.row_of = {item: row for row, item in enumerate(items["item_ids"], start=1)}
        self.titles = items["titles"]
        self.session = ort.InferenceSession(str(version_dir / "encoder.onnx"))

    def encode(self, rows: list[int], codes: list[int], stamps: list[float]) -> tuple[np.ndarray, np.ndarray]:
        ages = max(stamps) - np.array(stamps)
        user_vec, logits = self.session.run(
            None,
            {
                "item_vecs": self.embeddings[rows][None],
                "event_types": np.array([codes], dtype=np.int64),
                "age_s": ages[None].astype(np.float32),
                "attention_mask": np.ones((1, len(rows)), dtype=np.int64),
            },
        )
        return user_vec[0], logits[0]

    def __call__(self, ids: list[str], types: list[str], stamps: list[float]) -> dict:
        rows = [self.row_of.get(i, 0) for i in ids]
        codes = [1 + EVENT_TYPES.index(t) for t in types]
        user_vec, action_logits = self.encode(rows, codes, stamps)
        logits = self.embeddings[1:] @ user_vec
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        order = [int(i) for i in np.argsort(-probs) if i + 1 not in rows]
        top = self.embeddings[order[0] + 1]
        attribution = []
        for j in range(len(rows)):
            if j < len(rows) - ATTRIBUTED_EVENTS:
                attribution.append(0.0)  # only the newest events are occluded
                continue
            if len(rows) == 1:
                attribution.append(float(user_vec @ top))
                continue
            keep = [k for k in range(len(rows)) if k != j]
            occluded, _ = self.encode([rows[k] for k in keep], [codes[k] for k in keep], [stamps[k] for k in keep])
            attribution.append(float(user_vec @ top - occluded @ top))
        next_action = np.exp(action_logits - action_logits.max())
        return {
            "order": order,
            "probs": probs,
            "next_action": next_action / next_action.sum(),
            "attribution": np.array(attribution),
            "titles": [self.titles[r - 1] or "" if r else "" for r in rows],
        }


@pytest.fixture(scope="module")
def reference(tiny_triton: Settings) -> Reference:
    return Reference(tiny_triton.model_repository / tiny_triton.model_name / "1")


def test_event_types_match_the_schema() -> None:
    """model.py cannot import stream.schemas; its copy of the order must not drift."""
    utils = _pytriton_dir() / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    for name, path in (("triton_python_backend_utils", utils), ("recstream_model", MODEL_DIR / "model.py")):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    assert sys.modules["recstream_model"].EVENT_TYPES == EVENT_TYPES


def test_output_shapes(tiny_triton: Settings) -> None:
    ids = [["", "", IDS[1], IDS[2]], [IDS[3], IDS[4], IDS[5], IDS[6]], ["", "", "", IDS[7]]]
    types = [["", "", "view", "click"], ["view"] * 4, ["", "", "", "purchase"]]
    stamps = [[0, 0, T0, T0 + 1], [T0, T0 + 1, T0 + 2, T0 + 3], [0, 0, 0, T0]]
    out = infer(tiny_triton, ids, types, stamps)
    assert {name: value.shape for name, value in out.items()} == {
        "TOP_ITEMS": (3, 50),
        "TOP_SCORES": (3, 50),
        "TOP_TITLES": (3, 50),
        "NEXT_ACTION": (3, 4),
        "ATTRIBUTION": (3, 4),
        "INPUT_TITLES": (3, 4),
    }
    assert out["TOP_SCORES"].dtype == np.float32 and out["ATTRIBUTION"].dtype == np.float32


def test_matches_reference(tiny_triton: Settings, reference: Reference) -> None:
    """Item scores, exclusion of window items, next action, occlusion attribution and titles, unknown items."""
    windows = [
        (
            [IDS[0], "unknown-item", IDS[1], IDS[5], IDS[1]],
            ["view", "click", "add_to_cart", "view", "purchase"],
            [T0, T0 + 3600, T0 + 7200, T0 + 90000, T0 + 90500],
        ),
        ([IDS[9]], ["click"], [T0]),  # a single event carries the whole logit
        (IDS[20:34], ["view", "click"] * 7, [T0 + 60 * j for j in range(14)]),  # older events not attributed
    ]
    length = 16
    out = infer(
        tiny_triton,
        [pad(ids, length, "") for ids, _, _ in windows],
        [pad(types, length, "") for _, types, _ in windows],
        [pad(stamps, length, 0.0) for _, _, stamps in windows],
    )
    for row, (ids, types, stamps) in enumerate(windows):
        expected = reference(ids, types, stamps)
        top_items = [item.decode() for item in out["TOP_ITEMS"][row]]
        assert top_items == [IDS[i] for i in expected["order"][:50]]
        assert not set(top_items) & set(ids)
        scores = out["TOP_SCORES"][row]
        assert np.all(np.diff(scores) <= 0) and scores.sum() <= 1.0
        np.testing.assert_allclose(scores, expected["probs"][expected["order"][:50]], rtol=1e-4)
        titles = [t.decode() for t in out["TOP_TITLES"][row]]
        assert titles == [reference.titles[i] or "" for i in expected["order"][:50]]
        np.testing.assert_allclose(out["NEXT_ACTION"][row], expected["next_action"], rtol=1e-4)
        n = len(ids)
        np.testing.assert_allclose(out["ATTRIBUTION"][row, -n:], expected["attribution"], rtol=1e-3, atol=1e-5)
        assert np.all(out["ATTRIBUTION"][row, :-n] == 0)
        assert [t.decode() for t in out["INPUT_TITLES"][row]] == [""] * (length - n) + expected["titles"]


def test_padding_and_time_shift_do_not_change_the_result(tiny_triton: Settings) -> None:
    ids, types = [IDS[3], IDS[4], IDS[8]], ["view", "click", "view"]
    stamps = [T0, T0 + 60, T0 + 4000]
    short = infer(tiny_triton, [ids], [types], [stamps])
    long = infer(tiny_triton, [pad(ids, 50, "")], [pad(types, 50, "")], [pad(stamps, 50, 0.0)])
    shifted = infer(tiny_triton, [ids], [types], [[s + 12345.0 for s in stamps]])
    for other in (long, shifted):
        assert (other["TOP_ITEMS"] == short["TOP_ITEMS"]).all()
        np.testing.assert_allclose(other["TOP_SCORES"], short["TOP_SCORES"], rtol=1e-5)
        np.testing.assert_allclose(other["NEXT_ACTION"], short["NEXT_ACTION"], rtol=1e-5)
        np.testing.assert_allclose(other["ATTRIBUTION"][:, -3:], short["ATTRIBUTION"], rtol=1e-4, atol=1e-6)
    assert np.all(long["ATTRIBUTION"][:, :-3] == 0) and np.all(long["INPUT_TITLES"][:, :-3] == b"")


@pytest.mark.parametrize(
    ("ids", "types", "stamps", "message"),
    [
        ([[IDS[1], IDS[2]]], [["view", "view"]], [[T0]], "must have the same shape"),
        ([[IDS[1], IDS[2]]], [["view", "scroll"]], [[T0, T0]], "unknown event type(s) ['scroll']"),
        ([[IDS[1]], [""]], [["view"], [""]], [[T0], [0.0]], "every row needs at least one event"),
    ],
)
def test_bad_request_gets_a_clear_error_and_the_server_keeps_serving(
    tiny_triton: Settings, ids: list, types: list, stamps: list, message: str
) -> None:
    with pytest.raises(InferenceServerException) as error:
        infer(tiny_triton, ids, types, stamps)
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.value.message()
    assert infer(tiny_triton, [[IDS[1]]], [["view"]], [[T0]])["TOP_ITEMS"].shape == (1, 50)


async def test_a_bad_request_in_a_dynamic_batch_fails_alone(tiny_triton: Settings) -> None:
    good = _inputs([[IDS[1], IDS[2]]], [["view", "click"]], [[T0, T0 + 1]])
    bad = _inputs([[IDS[1], IDS[2]]], [["view", "scroll"]], [[T0, T0 + 1]])
    client = aioclient.InferenceServerClient(tiny_triton.triton_url)
    try:
        results = await asyncio.gather(
            *(client.infer(tiny_triton.model_name, bad if i == 5 else good) for i in range(12)),
            return_exceptions=True,
        )
    finally:
        await client.close()
    assert isinstance(results[5], InferenceServerException)
    assert "scroll" in results[5].message()
    expected = results[0].as_numpy("TOP_ITEMS")
    assert all((r.as_numpy("TOP_ITEMS") == expected).all() for i, r in enumerate(results) if i != 5)


async def test_the_published_version_serves(tmp_path: Path) -> None:
    """The trainer's newest version in model_repository/ loads and answers full windows with sane outputs."""
    newest = max((p for p in MODEL_DIR.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    catalogue = json.loads((newest / "items.json").read_bytes())["item_ids"]
    rng = np.random.default_rng(0)
    windows = [
        [
            WindowEvent(
                event_id=f"{b}-{i}",
                item_id=str(rng.choice(catalogue)),
                event_type=str(rng.choice(EVENT_TYPES)),
                timestamp=T0 + 600.0 * i,
                record_ts_ms=0,
            )
            for i in range(n)
        ]
        for b, n in enumerate([50, 1, 7])
    ]
    with serve(MODEL_DIR.parent, tmp_path) as settings:
        scorer = TritonScorer(settings)
        await scorer.start()
        try:
            results = await scorer.score(windows)
        finally:
            await scorer.stop()
    for events, result in zip(windows, results, strict=True):
        assert result.model.version == newest.name
        assert len(result.next_items) == settings.top_k
        assert not {i.item_id for i in result.next_items} & {e.item_id for e in events}
        assert np.isfinite([i.score for i in result.next_items]).all()
        assert np.isfinite(result.attribution).all() and len(result.attribution) == len(events)
        assert abs(sum(result.next_action.values()) - 1) < 1e-4
