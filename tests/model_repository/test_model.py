"""model.py served by the real tritonserver (tiny generated version), checked against a plain reference."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from hypothesis import given
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from recstream.bench import newest_version
from stream.schemas import EVENT_TYPES
from stream.settings import Settings
from tests.model_repository.backend import load_model_module
from tests.model_repository.tiny_version import MODEL_DIR, build_repository, item_ids, serve
from trainer.data import ContextVocabulary
from trainer.sequences import clock
from trainer.version import read_context

pytestmark = pytest.mark.integration

IDS = item_ids()
T0 = 1_700_000_000.0
OUTPUTS = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION", "ATTRIBUTION", "INPUT_TITLES")
#: what a prediction needs (one encoder pass), and what guidance needs (occlusion: one more pass per event)
PREDICT = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION")
EXPLAIN = ("TOP_ITEMS", "ATTRIBUTION", "INPUT_TITLES")

#: config.pbtxt's attribution_max_events: the newest events that occlusion attributes
ATTRIBUTED_EVENTS = int(
    re.search(r'"attribution_max_events" value: \{ string_value: "(\d+)"', (MODEL_DIR / "config.pbtxt").read_text())[1]
)


def _inputs(
    ids: list[list[str]], types: list[list[str]], stamps: list[list[float]], contexts: list[list[bytes]] | None = None
) -> list[grpcclient.InferInput]:
    arrays = [
        ("ITEM_IDS", np.array(ids, dtype=object), "BYTES"),
        ("EVENT_TYPES", np.array(types, dtype=object), "BYTES"),
        ("TIMESTAMPS", np.array(stamps, dtype=np.float64), "FP64"),
    ]
    if contexts is not None:
        arrays.append(("CONTEXT", np.array(contexts, dtype=object), "BYTES"))
    inputs = []
    for name, array, dtype in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _requested(outputs: Sequence[str] | None) -> list[grpcclient.InferRequestedOutput] | None:
    return None if outputs is None else [grpcclient.InferRequestedOutput(name) for name in outputs]


def _arrays(result: grpcclient.InferResult) -> dict[str, np.ndarray]:
    """Every output the response carries (and only those), by name."""
    return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}


def infer(
    settings: Settings,
    ids: list[list[str]],
    types: list[list[str]],
    stamps: list[list[float]],
    outputs: Sequence[str] | None = None,
    parameters: dict[str, object] | None = None,
    contexts: list[list[bytes]] | None = None,
) -> dict[str, np.ndarray]:
    """One request; ``outputs`` None names no outputs (the naive client: Triton sends them all)."""
    with grpcclient.InferenceServerClient(settings.triton_url) as client:
        inputs = _inputs(ids, types, stamps, contexts)
        result = client.infer(settings.model_name, inputs, outputs=_requested(outputs), parameters=parameters)
    return _arrays(result)


def pad(row: list, length: int, value: object) -> list:
    return [value] * (length - len(row)) + row


Window = tuple[list[str], list[str], list[float]]


def padded(windows: Sequence[Window], length: int) -> tuple[list[list[str]], list[list[str]], list[list[float]]]:
    """The request's three inputs: the windows left-padded to ``length``."""
    return (
        [pad(ids, length, "") for ids, _, _ in windows],
        [pad(types, length, "") for _, types, _ in windows],
        [pad(stamps, length, 0.0) for _, _, stamps in windows],
    )


class Reference:
    """What the served model must compute, from the version's files, one window (real events only) at a time."""

    def __init__(self, version_dir: Path) -> None:
        self.embeddings = np.load(version_dir / "item_embeddings.npy")
        items = json.loads((version_dir / "items.json").read_bytes())
        self.row_of = {item: row for row, item in enumerate(items["item_ids"], start=1)}
        self.titles = items["titles"]
        self.session = ort.InferenceSession(str(version_dir / "encoder.onnx"))
        self.context = read_context(version_dir)  # the trainer's reader and tokens, not model.py's

    def encode(
        self, rows: list[int], codes: list[int], stamps: list[float], context: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ages = max(stamps) - np.array(stamps)
        mask = np.ones((1, len(rows)), dtype=np.int64)
        feeds = {
            "item_vecs": self.embeddings[rows][None],
            "event_types": np.array([codes], dtype=np.int64),
            "age_s": ages[None].astype(np.float32),
            "attention_mask": mask,
        }
        if "hour" in {i.name for i in self.session.get_inputs()}:  # the trainer's clock, not model.py's
            feeds["hour"], feeds["weekday"] = clock(np.array([stamps], dtype=np.float64), mask)
        if context is not None:
            feeds["context"] = context[None]
        user_vec, logits = self.session.run(None, feeds)
        return user_vec[0], logits[0]

    def __call__(
        self, ids: list[str], types: list[str], stamps: list[float], contexts: list[dict] | None = None
    ) -> dict:
        rows = [self.row_of.get(i, 0) for i in ids]
        codes = [1 + EVENT_TYPES.index(t) for t in types]
        tokens = None if self.context is None else self.context.encode(contexts or [{}] * len(ids))  # [L, C]
        user_vec, action_logits = self.encode(rows, codes, stamps, tokens)
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
            occluded, _ = self.encode(
                [rows[k] for k in keep],
                [codes[k] for k in keep],
                [stamps[k] for k in keep],
                None if tokens is None else tokens[keep],
            )
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


def check_row(out: dict[str, np.ndarray], row: int, window: Window, expected: dict, titles: list) -> None:
    """Row ``row`` of a response equals the reference's ``expected`` for ``window``, for each output it carries."""
    ids = window[0]
    n, k = len(ids), 50
    if "TOP_ITEMS" in out:
        top_items = [item.decode() for item in out["TOP_ITEMS"][row]]
        assert top_items == [IDS[i] for i in expected["order"][:k]]
        assert not set(top_items) & set(ids)
    if "TOP_SCORES" in out:
        scores = out["TOP_SCORES"][row]
        assert np.all(np.diff(scores) <= 0) and scores.sum() <= 1.0
        np.testing.assert_allclose(scores, expected["probs"][expected["order"][:k]], rtol=1e-4)
    if "TOP_TITLES" in out:
        assert [t.decode() for t in out["TOP_TITLES"][row]] == [titles[i] or "" for i in expected["order"][:k]]
    if "NEXT_ACTION" in out:
        np.testing.assert_allclose(out["NEXT_ACTION"][row], expected["next_action"], rtol=1e-4)
    if "ATTRIBUTION" in out:
        np.testing.assert_allclose(out["ATTRIBUTION"][row, -n:], expected["attribution"], rtol=1e-3, atol=1e-5)
        assert np.all(out["ATTRIBUTION"][row, :-n] == 0)
    if "INPUT_TITLES" in out:
        length = out["INPUT_TITLES"].shape[1]
        assert [t.decode() for t in out["INPUT_TITLES"][row]] == [""] * (length - n) + expected["titles"]


@given(
    st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=20),
    st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_the_served_clock_is_the_trainers(stamps: list[float], mask: list[bool]) -> None:
    """model.py cannot import trainer.sequences: its hour and weekday of a timestamp must be the trainer's."""
    times, keep = np.array([stamps]), np.array([mask[: len(stamps)]])
    served = load_model_module().clock(times, keep)
    for ours, theirs in zip(served, clock(times, keep.astype(np.int64)), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert served[0][keep].min(initial=1) >= 1 and served[0].max() <= 24 and served[1].max() <= 7


def test_the_clock_is_utc_hour_and_weekday() -> None:
    # 2024-03-04 was a Monday; 13:30 UTC
    (hour,), (weekday,) = clock(np.array([[1709559000.0, 1709559000.0 + 6 * 86400]]), np.array([[1, 1]]))
    assert hour.tolist() == [14, 14] and weekday.tolist() == [1, 7]


@pytest.fixture(scope="module")
def timed_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real tritonserver serving a tiny version whose encoder takes hour and weekday (use_time)."""
    repository = build_repository(tmp_path_factory.mktemp("timed_repository"), seed=3, use_time=True)
    with serve(repository, tmp_path_factory.mktemp("timed_triton")) as settings:
        yield settings


def test_a_version_with_time_inputs_gets_the_hour_and_weekday_of_every_event(timed_triton: Settings) -> None:
    reference = Reference(timed_triton.model_repository / timed_triton.model_name / "1")
    ids, types = [IDS[3], IDS[4], IDS[8], IDS[9]], ["view", "click", "view", "purchase"]
    stamps = [T0, T0 + 3 * 3600, T0 + 30 * 3600, T0 + 50 * 3600]
    windows = [(ids, types, stamps), (ids[:2], types[:2], stamps[:2])]
    out = infer(timed_triton, *padded(windows, 6))
    for row, window in enumerate(windows):
        check_row(out, row, window, reference(*window), reference.titles)
    week, hours = 7 * 86400.0, 6 * 3600.0
    same = infer(timed_triton, [ids], [types], [[s + week for s in stamps]])
    moved = infer(timed_triton, [ids], [types], [[s + hours for s in stamps]])
    np.testing.assert_allclose(same["TOP_SCORES"][0], out["TOP_SCORES"][0], rtol=1e-5)
    assert not np.allclose(moved["TOP_SCORES"][0], out["TOP_SCORES"][0], rtol=1e-3), "the hour must matter"


@given(st.dictionaries(st.text(max_size=4), st.lists(st.text(max_size=4), unique=True, max_size=4), max_size=4))
def test_the_served_context_tokens_are_the_trainers(values: dict[str, list[str]]) -> None:
    """model.py cannot import trainer.data: its (slot, token) of a context key and value must be the trainer's."""
    trainer_side = ContextVocabulary({key: tuple(v) for key, v in values.items()}).token_of
    assert load_model_module().context_token_of(values) == trainer_side


def context_row(contexts: list[dict]) -> bytes:
    """One row's CONTEXT: every event's context listed in ``values`` (the format allows repeats), in order."""
    return orjson.dumps({"values": contexts, "events": list(range(len(contexts)))})


def test_a_version_with_context_reads_the_keys_and_values_it_knows(context_triton: Settings) -> None:
    reference = Reference(context_triton.model_repository / context_triton.model_name / "1")
    ids, types = [IDS[3], IDS[4], IDS[8], IDS[9]], ["view", "click", "view", "purchase"]
    stamps = [T0, T0 + 60, T0 + 120, T0 + 180]
    contexts = [{"device": "tv", "region": "2"}, {"device": "mobile"}, {}, {"region": "1", "colour": "red"}]
    windows = [(ids, types, stamps), (ids[:2], types[:2], stamps[:2])]
    rows = [[context_row(contexts[: len(w[0])])] for w in windows]
    out = infer(context_triton, *padded(windows, 6), contexts=rows)
    for row, window in enumerate(windows):
        check_row(out, row, window, reference(*window, contexts[: len(window[0])]), reference.titles)
    # the same contexts as distinct values and indices: the same result
    shared = {"values": [{"device": "mobile"}, {}, {"device": "tv", "region": "2"}], "events": [2, 0]}
    np.testing.assert_allclose(
        infer(context_triton, [ids[:2]], [types[:2]], [stamps[:2]], contexts=[[orjson.dumps(shared)]])["TOP_SCORES"][0],
        out["TOP_SCORES"][1],
        rtol=1e-5,  # that row was padded to 6 events: float rounding
    )

    # keys and values the version does not know, and values that are not strings, are no context at all
    plain = infer(context_triton, [ids], [types], [stamps])  # no CONTEXT input
    unknown = [{"colour": "red"}, {"device": "fridge"}, {"region": 2}, {"device": ["tv"]}]
    ignored = infer(context_triton, [ids], [types], [stamps], contexts=[[context_row(unknown)]])
    np.testing.assert_allclose(ignored["TOP_SCORES"][0], plain["TOP_SCORES"][0], rtol=1e-6)
    assert not np.allclose(out["TOP_SCORES"][0], plain["TOP_SCORES"][0], rtol=1e-3), "known context must matter"


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[1, 2]",
        b'{"values": [{}]}',
        b'{"values": ["tv"], "events": [0]}',
        b'{"values": [{}], "events": [1]}',  # no value 1
        b'{"values": [{}], "events": [0, 0]}',  # two events' context for a one-event row
    ],
)
def test_context_in_another_shape_is_an_invalid_argument(context_triton: Settings, bad: bytes) -> None:
    with pytest.raises(InferenceServerException, match="CONTEXT must be"):
        infer(context_triton, [[IDS[1]]], [["view"]], [[T0]], contexts=[[bad]])


def test_a_version_without_context_ignores_it(tiny_triton: Settings) -> None:
    ids, types, stamps = [IDS[5], IDS[6]], ["view", "click"], [T0, T0 + 5]
    plain = infer(tiny_triton, [ids], [types], [stamps])
    given_context = infer(tiny_triton, [ids], [types], [stamps], contexts=[[b"not even json"]])
    np.testing.assert_array_equal(given_context["TOP_SCORES"], plain["TOP_SCORES"])


def test_event_types_match_the_schema() -> None:
    """model.py cannot import stream.schemas; its copy of the order must not drift."""
    assert load_model_module().EVENT_TYPES == EVENT_TYPES
    assert load_model_module().OUTPUTS == OUTPUTS


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
    out = infer(tiny_triton, *padded(windows, 16))
    assert set(out) == set(OUTPUTS)  # a client that names no outputs gets them all
    for row, window in enumerate(windows):
        check_row(out, row, window, reference(*window), reference.titles)


def test_only_the_requested_outputs_and_attribution_only_when_asked(
    tiny_triton: Settings, reference: Reference
) -> None:
    windows: list[Window] = [
        ([IDS[2], IDS[40], IDS[41], IDS[2]], ["view", "click", "view", "purchase"], [T0, T0 + 5, T0 + 900, T0 + 901]),
        ([IDS[77]], ["add_to_cart"], [T0]),
    ]
    everything = infer(tiny_triton, *padded(windows, 4))
    predicted = infer(tiny_triton, *padded(windows, 4), outputs=PREDICT)
    explained = infer(tiny_triton, *padded(windows, 4), outputs=EXPLAIN)
    assert set(predicted) == set(PREDICT) and set(explained) == set(EXPLAIN)
    for name in PREDICT:
        np.testing.assert_array_equal(predicted[name], everything[name])
    for name in EXPLAIN:
        np.testing.assert_array_equal(explained[name], everything[name])
    for row, window in enumerate(windows):
        check_row(predicted, row, window, reference(*window), reference.titles)
        check_row(explained, row, window, reference(*window), reference.titles)


@pytest.mark.parametrize("top_k", [1, 10, 500])
def test_the_top_k_parameter_cuts_the_top_items(tiny_triton: Settings, top_k: int) -> None:
    window = [[IDS[3], IDS[4]]], [["view", "click"]], [[T0, T0 + 1]]
    everything = infer(tiny_triton, *window)
    cut = infer(tiny_triton, *window, outputs=PREDICT, parameters={"top_k": top_k})
    kept = min(top_k, 50)  # the config's top_k is the most a request gets
    for name in ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES"):
        np.testing.assert_array_equal(cut[name], everything[name][:, :kept])
    np.testing.assert_array_equal(cut["NEXT_ACTION"], everything["NEXT_ACTION"])


async def test_requests_of_one_dynamic_batch_may_differ_in_outputs_and_length(
    tiny_triton: Settings, reference: Reference
) -> None:
    """Requests in flight at once, some asking for ATTRIBUTION, some not, some naming no outputs, windows of
    1..20 events padded to each request's own longest: Triton batches them together, every answer is right."""
    rng = np.random.default_rng(7)
    requests: list[tuple[list[Window], Sequence[str] | None]] = []
    for r in range(18):
        windows: list[Window] = []
        for _ in range(1 + r % 3):
            n = int(rng.integers(1, 21))
            picks = rng.choice(len(IDS), size=n)
            windows.append(
                (
                    [IDS[i] for i in picks],
                    [str(t) for t in rng.choice(EVENT_TYPES, size=n)],
                    [T0 + float(s) for s in np.sort(rng.uniform(0, 3 * 86400, size=n))],
                )
            )
        requests.append((windows, (PREDICT, EXPLAIN, None)[r % 3]))
    client = aioclient.InferenceServerClient(tiny_triton.triton_url)
    try:
        before = (await client.get_inference_statistics(tiny_triton.model_name)).model_stats[0]
        results = await asyncio.gather(
            *(
                client.infer(
                    tiny_triton.model_name,
                    _inputs(*padded(windows, max(len(w[0]) for w in windows))),
                    outputs=_requested(outputs),
                )
                for windows, outputs in requests
            )
        )
        after = (await client.get_inference_statistics(tiny_triton.model_name)).model_stats[0]
    finally:
        await client.close()
    for (windows, outputs), result in zip(requests, results, strict=True):
        out = _arrays(result)
        assert set(out) == set(outputs or OUTPUTS)
        for row, window in enumerate(windows):
            check_row(out, row, window, reference(*window), reference.titles)
    executions = after.execution_count - before.execution_count
    assert executions < len(requests), "the dynamic batcher should have put several of these requests together"


def test_short_windows_equal_the_same_windows_padded_to_50(tiny_triton: Settings) -> None:
    """A request [B, L] padded only to its longest window answers as the same windows padded to 50."""
    windows: list[Window] = [
        ([IDS[11]], ["click"], [T0]),
        ([IDS[12], IDS[13], IDS[14], IDS[15]], ["view", "view", "click", "purchase"], [T0, T0 + 1, T0 + 60, T0 + 61]),
        (IDS[50:59], ["view"] * 9, [T0 + 3600.0 * j for j in range(9)]),
    ]
    short, long = infer(tiny_triton, *padded(windows, 9)), infer(tiny_triton, *padded(windows, 50))
    assert short["ATTRIBUTION"].shape == short["INPUT_TITLES"].shape == (3, 9)
    assert (short["TOP_ITEMS"] == long["TOP_ITEMS"]).all() and (short["TOP_TITLES"] == long["TOP_TITLES"]).all()
    np.testing.assert_allclose(short["TOP_SCORES"], long["TOP_SCORES"], rtol=1e-5)
    np.testing.assert_allclose(short["NEXT_ACTION"], long["NEXT_ACTION"], rtol=1e-5)
    np.testing.assert_allclose(short["ATTRIBUTION"], long["ATTRIBUTION"][:, -9:], rtol=1e-4, atol=1e-6)
    assert (short["INPUT_TITLES"] == long["INPUT_TITLES"][:, -9:]).all()


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
    ("ids", "types", "stamps", "parameters", "message"),
    [
        ([[IDS[1], IDS[2]]], [["view", "view"]], [[T0]], None, "must have the same shape"),
        ([[IDS[1], IDS[2]]], [["view", "scroll"]], [[T0, T0]], None, "unknown event type(s) ['scroll']"),
        ([[IDS[1]], [""]], [["view"], [""]], [[T0], [0.0]], None, "every row needs at least one event"),
        ([[IDS[1]]], [["view"]], [[T0]], {"top_k": 0}, "top_k must be a positive integer; got 0"),
        ([[IDS[1]]], [["view"]], [[T0]], {"top_k": "ten"}, "top_k must be a positive integer; got 'ten'"),
    ],
)
def test_bad_request_gets_a_clear_error_and_the_server_keeps_serving(
    tiny_triton: Settings, ids: list, types: list, stamps: list, parameters: dict | None, message: str
) -> None:
    with pytest.raises(InferenceServerException) as error:
        infer(tiny_triton, ids, types, stamps, parameters=parameters)
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


@pytest.fixture(scope="module", params=["recstream", "recstream-ml-1m"])
def published(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The real tritonserver serving a shipped model of model_repository/ (its newest version): MovieLens-100K's
    and MovieLens-1M's (a second model, ``trainer.publish.model_name``: its item ids are titles)."""
    with serve(MODEL_DIR.parent, tmp_path_factory.mktemp("published"), model_name=request.param) as settings:
        yield settings


def test_the_published_version_serves(published: Settings) -> None:
    """The newest version in model_repository/ loads and answers like the plain reference: windows of 50, 7
    and 1 events, as a naive request padded to 50, as predictions padded to the longest window only, and as
    explanations."""
    newest = newest_version(published)
    reference = Reference(newest)
    catalogue = json.loads((newest / "items.json").read_bytes())["item_ids"]
    rng = np.random.default_rng(0)
    windows: list[Window] = [
        (
            [str(item) for item in rng.choice(catalogue, size=n)],
            [str(t) for t in rng.choice(EVENT_TYPES, size=n)],
            [T0 + 600.0 * i for i in range(n)],
        )
        for n in (50, 7, 1)
    ]
    expected = [reference(*window) for window in windows]
    naive = infer(published, *padded(windows, 50))
    assert set(naive) == set(OUTPUTS)
    short = infer(published, *padded(windows[1:], 7), outputs=PREDICT)
    explained = infer(published, *padded(windows[1:], 7), outputs=EXPLAIN)
    assert set(short) == set(PREDICT) and set(explained) == set(EXPLAIN)
    titles = json.loads((newest / "items.json").read_bytes())["titles"]
    # the reference indexes the tiny version's item ids; compare the real catalogue's ids here
    for row, (window, want) in enumerate(zip(windows, expected, strict=True)):
        top = [catalogue[i] for i in want["order"][:50]]
        assert [item.decode() for item in naive["TOP_ITEMS"][row]] == top
        np.testing.assert_allclose(naive["TOP_SCORES"][row], want["probs"][want["order"][:50]], rtol=1e-3)
        np.testing.assert_allclose(naive["NEXT_ACTION"][row], want["next_action"], rtol=1e-3)
        n = len(window[0])
        np.testing.assert_allclose(naive["ATTRIBUTION"][row, -n:], want["attribution"], rtol=1e-3, atol=1e-4)
        assert [t.decode() for t in naive["INPUT_TITLES"][row, -n:]] == want["titles"]
        assert [t.decode() for t in naive["TOP_TITLES"][row]] == [titles[i] or "" for i in want["order"][:50]]
    for name in PREDICT:  # the short request, rows 1 and 2, answers as the rows padded to 50
        if name == "TOP_SCORES" or name == "NEXT_ACTION":
            np.testing.assert_allclose(short[name], naive[name][1:], rtol=1e-4, atol=1e-7)
        else:
            np.testing.assert_array_equal(short[name], naive[name][1:])
    np.testing.assert_array_equal(explained["TOP_ITEMS"], naive["TOP_ITEMS"][1:])
    np.testing.assert_allclose(explained["ATTRIBUTION"], naive["ATTRIBUTION"][1:, -7:], rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(explained["INPUT_TITLES"], naive["INPUT_TITLES"][1:, -7:])


def test_predictions_do_not_pay_for_the_attribution(published: Settings) -> None:
    """A request without ATTRIBUTION skips the occlusion (one more encoder pass per attributed event): on the
    published version a batch of 64 windows of 50 events answers several times faster than one with it.
    (Triton drops unrequested outputs from the response either way, so only the time shows the skip.)"""
    newest = newest_version(published)
    catalogue = json.loads((newest / "items.json").read_bytes())["item_ids"]
    rng = np.random.default_rng(1)
    windows: list[Window] = [
        ([str(i) for i in rng.choice(catalogue, size=50)], ["view"] * 50, [T0 + 60.0 * j for j in range(50)])
        for _ in range(64)
    ]
    inputs = _inputs(*padded(windows, 50))
    with grpcclient.InferenceServerClient(published.triton_url) as client:

        def best_of_3(outputs: Sequence[str]) -> float:
            times = []
            for _ in range(3):
                started = time.perf_counter()
                client.infer(published.model_name, inputs, outputs=_requested(outputs))
                times.append(time.perf_counter() - started)
            return min(times)

        predict, explain = best_of_3(PREDICT), best_of_3(EXPLAIN)
    assert predict < explain / 2, f"predictions {predict * 1e3:.0f} ms, with attribution {explain * 1e3:.0f} ms"
