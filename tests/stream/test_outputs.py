from __future__ import annotations

from stream.batcher import PendingPrediction
from stream.outputs import ATTRIBUTION_TOP_N, build_prediction
from stream.schemas import EventType
from tests.stream.helpers import MODEL, event, scored


def test_prediction_from_pending_and_scored() -> None:
    window = [event(f"e{i}", 100 + 10 * i, item_id=f"i{i}", record_ts_ms=1_000 * i) for i in range(7)]
    window[3] = event("e3", 130, item_id="i3", event_type=EventType.click, record_ts_ms=3_000)
    weights = [0.1, 0.7, 0.0, 0.9, 0.2, 0.3, 0.05]
    titles = [None, "Star Wars (1977)", None, "Alien (1979)", None, None, None]
    pending = PendingPrediction("u1", window)
    pending.add(window, window[-2], lambda: None)
    pending.add(window, window[-1], lambda: None)

    prediction = build_prediction(pending, scored(window, weights, titles), top_k=3, now_s=10.0)

    assert prediction.user_id == "u1"
    assert prediction.event_ids == ["e5", "e6"]
    assert prediction.model == MODEL
    assert [i.item_id for i in prediction.next_items] == ["n0", "n1", "n2"]
    assert prediction.next_action["purchase"] == 0.1
    assert (prediction.window.events, prediction.window.span_seconds) == (7, 60)
    assert len(prediction.attribution) == ATTRIBUTION_TOP_N
    top = prediction.attribution[0]
    assert (top.item_id, top.event_type, top.weight, top.title) == ("i3", EventType.click, 0.9, "Alien (1979)")
    assert [a.weight for a in prediction.attribution] == sorted(weights, reverse=True)[:ATTRIBUTION_TOP_N]
    assert prediction.latency_ms == 10_000 - 6_000
    assert prediction.emitted_at == 10.0
