from __future__ import annotations

import pytest

from stream.policy import Action, decide
from stream.schemas import Attribution, EventType, ModelRef, Prediction, ScoredItem, WindowSummary
from stream.settings import Settings
from tests.stream.helpers import event

SETTINGS = Settings(
    guidance_cooldown_s=300, checkout_min_purchase_prob=0.3, retain_max_engage_prob=0.35, recommend_min_score=0.05
)
VIEWS = [event("1", 1, "i1"), event("2", 2, "i2", EventType.click)]
CART = [*VIEWS, event("3", 3, "i9", EventType.add_to_cart)]


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
        attribution=[
            Attribution(item_id="i2", event_type=EventType.click, weight=0.8, title="Star Wars (1977)"),
            Attribution(item_id="i1", event_type=EventType.view, weight=0.3, title=None),
            Attribution(item_id="i9", event_type=EventType.add_to_cart, weight=0.1, title="Alien (1979)"),
        ],
        latency_ms=12,
        emitted_at=1_000.0,
    )


def test_recommend_names_the_heaviest_behaviour_with_titles() -> None:
    guidance = decide(_prediction(), VIEWS, None, SETTINGS, now_s=1_001.0)
    assert guidance is not None
    assert guidance.action == Action.recommend
    assert guidance.explanation == (
        "Recommended Return of the Jedi (1983) because you recently clicked Star Wars (1977) and viewed item i1."
    )
    assert [i.item_id for i in guidance.items] == ["n1"]
    assert (guidance.event_ids, guidance.emitted_at) == (["3"], 1_001.0)


def test_checkout_when_cart_is_open_and_purchase_is_likely() -> None:
    guidance = decide(_prediction(purchase=0.3), CART, None, SETTINGS, now_s=0)
    assert guidance is not None
    assert guidance.action == Action.checkout
    assert [(i.item_id, i.title) for i in guidance.items] == [("i9", "Alien (1979)")]
    assert guidance.explanation == (
        "Suggested checking out because you added Alien (1979) to your cart and have not bought it yet."
    )


def test_purchased_cart_items_do_not_trigger_checkout() -> None:
    bought = [*CART, event("4", 4, "i9", EventType.purchase)]
    guidance = decide(_prediction(purchase=0.9), bought, None, SETTINGS, now_s=0)
    assert guidance is not None
    assert guidance.action == Action.recommend


def test_retain_when_engagement_is_low() -> None:
    guidance = decide(_prediction(view=0.7, click=0.1, add_to_cart=0.1, purchase=0.1), CART, None, SETTINGS, now_s=0)
    assert guidance is not None
    assert guidance.action == Action.retain
    assert "Star Wars (1977)" in guidance.explanation


def test_no_guidance_when_top_score_is_low() -> None:
    assert decide(_prediction(top=0.01), VIEWS, None, SETTINGS, now_s=0) is None


@pytest.mark.parametrize(("last_at", "expected"), [(999.0, False), (1_000.0 - 300, True), (None, True)])
def test_cooldown_on_prediction_emission_time(last_at: float | None, expected: bool) -> None:
    assert (decide(_prediction(), VIEWS, last_at, SETTINGS, now_s=5_000) is not None) is expected
