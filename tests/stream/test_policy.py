from __future__ import annotations

import pytest

from stream.policy import ATTRIBUTION_TOP_N, Action, attribution_of, build_guidance, decide, stale
from stream.schemas import Attribution, EventType, Explained, ModelRef, Prediction, ScoredItem, WindowSummary
from stream.settings import Settings
from tests.stream.helpers import MODEL, event

SETTINGS = Settings(
    guidance_cooldown_s=300,
    guidance_max_delay_s=30,
    checkout_min_purchase_prob=0.3,
    retain_max_engage_prob=0.35,
    recommend_min_score=0.05,
)
VIEWS = [event("1", 1, "i1"), event("2", 2, "i2", EventType.click)]
CART = [*VIEWS, event("3", 3, "i9", EventType.add_to_cart)]
ATTRIBUTION = [
    Attribution(item_id="i2", event_type=EventType.click, weight=0.8, title="Star Wars (1977)"),
    Attribution(item_id="i1", event_type=EventType.view, weight=0.3, title=None),
    Attribution(item_id="i9", event_type=EventType.add_to_cart, weight=0.1, title="Alien (1979)"),
]


def _prediction(
    *, view: float = 0.3, click: float = 0.3, add_to_cart: float = 0.2, purchase: float = 0.2, top: float = 0.4
) -> Prediction:
    return Prediction(
        user_id="u1",
        event_ids=["3"],
        model=ModelRef(name="recstream", version="2"),
        next_items=[ScoredItem(item_id="n1", score=top, title="Return of the Jedi (1983)")],
        next_action={"view": view, "click": click, "add_to_cart": add_to_cart, "purchase": purchase},
        window=WindowSummary(events=3, span_seconds=2),
        latency_ms=12,
        stages_ms={},
        emitted_at=1_000.0,
    )


def test_recommend_names_the_heaviest_behaviour_with_titles() -> None:
    prediction = _prediction()
    assert decide(prediction, VIEWS, None, SETTINGS) is Action.recommend
    guidance = build_guidance(prediction, Action.recommend, VIEWS, ATTRIBUTION, now_s=1_001.0)
    assert guidance.explanation == (
        "Recommended Return of the Jedi (1983) because you recently clicked Star Wars (1977) and viewed item i1."
    )
    assert [i.item_id for i in guidance.items] == ["n1"]
    assert (guidance.event_ids, guidance.emitted_at, guidance.attribution) == (["3"], 1_001.0, ATTRIBUTION)


def test_checkout_when_cart_is_open_and_purchase_is_likely() -> None:
    prediction = _prediction(purchase=0.3)
    assert decide(prediction, CART, None, SETTINGS) is Action.checkout
    guidance = build_guidance(prediction, Action.checkout, CART, ATTRIBUTION, now_s=0)
    assert [(i.item_id, i.title) for i in guidance.items] == [("i9", "Alien (1979)")]
    assert guidance.explanation == (
        "Suggested checking out because you added Alien (1979) to your cart and have not bought it yet."
    )


def test_purchased_cart_items_do_not_trigger_checkout() -> None:
    bought = [*CART, event("4", 4, "i9", EventType.purchase)]
    assert decide(_prediction(purchase=0.9), bought, None, SETTINGS) is Action.recommend


def test_retain_when_engagement_is_low() -> None:
    prediction = _prediction(view=0.7, click=0.1, add_to_cart=0.1, purchase=0.1)
    assert decide(prediction, CART, None, SETTINGS) is Action.retain
    guidance = build_guidance(prediction, Action.retain, CART, ATTRIBUTION, now_s=0)
    assert "Star Wars (1977)" in guidance.explanation


def test_no_guidance_when_top_score_is_low() -> None:
    assert decide(_prediction(top=0.01), VIEWS, None, SETTINGS) is None


def test_without_attribution_the_explanation_still_reads() -> None:
    guidance = build_guidance(_prediction(), Action.recommend, VIEWS, [], now_s=0)
    assert guidance.explanation == "Recommended Return of the Jedi (1983) because you recently browsed."


@pytest.mark.parametrize(("last_at", "expected"), [(999.0, False), (1_000.0 - 300, True), (None, True)])
def test_cooldown_on_prediction_emission_time(last_at: float | None, expected: bool) -> None:
    assert (decide(_prediction(), VIEWS, last_at, SETTINGS) is not None) is expected


@pytest.mark.parametrize(("read_at", "expected"), [(1_000.0, False), (1_030.0, False), (1_030.5, True)])
def test_a_prediction_read_later_than_the_max_delay_is_stale(read_at: float, expected: bool) -> None:
    assert stale(_prediction(), read_at, SETTINGS) is expected  # emitted at 1,000 s, max delay 30 s


def test_attribution_names_the_heaviest_events_first() -> None:
    window = [event(f"e{i}", 100 + 10 * i, item_id=f"i{i}") for i in range(7)]
    window[3] = event("e3", 130, item_id="i3", event_type=EventType.click)
    weights = [0.1, 0.7, 0.0, 0.9, 0.2, 0.3, 0.05]
    titles = [None, "Star Wars (1977)", None, "Alien (1979)", None, None, None]
    attribution = attribution_of(window, Explained(model=MODEL, weights=weights, titles=titles))
    assert len(attribution) == ATTRIBUTION_TOP_N
    top = attribution[0]
    assert (top.item_id, top.event_type, top.weight, top.title) == ("i3", EventType.click, 0.9, "Alien (1979)")
    assert [a.weight for a in attribution] == sorted(weights, reverse=True)[:ATTRIBUTION_TOP_N]
