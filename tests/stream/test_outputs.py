from __future__ import annotations

from stream.batcher import Origin, PendingPrediction
from stream.outputs import build_prediction
from stream.schemas import EventType
from tests.stream.helpers import MODEL, event, scored

ORIGIN = Origin("views", 0, 0)


def test_prediction_from_pending_and_scored() -> None:
    window = [event(f"e{i}", 100 + 10 * i, item_id=f"i{i}", record_ts_ms=1_000 * i) for i in range(7)]
    window[3] = event("e3", 130, item_id="i3", event_type=EventType.click, record_ts_ms=3_000)
    pending = PendingPrediction("u1", window)
    pending.add(window, window[-2], lambda: None, ORIGIN, {"ingest": 9.0}, now=1.0)
    pending.add(window, window[-1], lambda: None, ORIGIN, {"ingest": 2.0, "window": 0.5}, now=2.0)
    pending.stages_ms |= {"batch_wait": 3.0, "triton": 20.0, "emit": 0.25}

    prediction = build_prediction(pending, scored(), top_k=3, now_s=10.0)

    assert prediction.user_id == "u1"
    assert prediction.event_ids == ["e5", "e6"]
    assert prediction.model == MODEL
    assert [i.item_id for i in prediction.next_items] == ["n0", "n1", "n2"]
    assert prediction.next_action["purchase"] == 0.1
    assert (prediction.window.events, prediction.window.span_seconds) == (7, 60)
    assert prediction.latency_ms == 10_000 - 6_000
    assert prediction.stages_ms == {"ingest": 2.0, "window": 0.5, "batch_wait": 3.0, "triton": 20.0, "emit": 0.25}
    assert prediction.emitted_at == 10.0
    assert "attribution" not in prediction.model_dump(), "predictions carry no attribution: only guidance does"
