"""Guidance policy: what, if anything, to tell a user after a prediction.

The rules, first match wins (thresholds come from :class:`Settings`):

1. **cooldown** -- no guidance when the user got one less than ``guidance_cooldown_s`` ago. Time base: the
   prediction's ``emitted_at`` (wall clock of the worker when it emitted the prediction), compared with the
   ``emitted_at`` of the prediction that triggered the last guidance. The time travels in the message, so
   reprocessing the same predictions after a restart takes the same decisions.
2. **checkout** -- the window has items added to the cart and not purchased after that, and
   p(purchase) >= ``checkout_min_purchase_prob``. Items: those cart items.
3. **retain** -- engagement p(click) + p(add_to_cart) + p(purchase) < ``retain_max_engage_prob``
   (the user is likely to only browse, or leave). Items: the top recommendations, to bring them back.
4. **recommend** -- the top item's score >= ``recommend_min_score``. Items: the top recommendations.
5. otherwise no guidance.

The ``explanation`` is one plain-language sentence naming the past behaviour that drove the guidance: the cart
items for checkout, else the window events with the largest attribution weight; titles where known.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from stream.schemas import Attribution, EventType, Guidance, Prediction, ScoredItem, WindowEvent
from stream.settings import Settings
from stream.window import cart_items

#: How many window events an explanation names.
EXPLAINED_EVENTS = 2


class Action(StrEnum):
    checkout = "checkout"
    retain = "retain"
    recommend = "recommend"


_DID = {
    EventType.view: "viewed {}",
    EventType.click: "clicked {}",
    EventType.add_to_cart: "added {} to your cart",
    EventType.purchase: "bought {}",
}


def decide(
    prediction: Prediction,
    window: Sequence[WindowEvent],
    last_guidance_at: float | None,
    settings: Settings,
    *,
    now_s: float,
) -> Guidance | None:
    """Apply the rules above; ``last_guidance_at`` is the cooldown table's value for the user."""
    if last_guidance_at is not None and prediction.emitted_at - last_guidance_at < settings.guidance_cooldown_s:
        return None
    titles = _known_titles(prediction)
    p = prediction.next_action
    cart = cart_items(window)
    if cart and p.get(EventType.purchase, 0.0) >= settings.checkout_min_purchase_prob:
        scores = {item.item_id: item.score for item in prediction.next_items}
        items = [ScoredItem(item_id=i, score=scores.get(i, 0.0), title=titles.get(i)) for i in cart]
        names = _join([_name(i, titles) for i in cart])
        return _guidance(
            prediction,
            Action.checkout,
            items,
            f"Suggested checking out because you added {names} to your cart and have not bought "
            f"{'it' if len(cart) == 1 else 'them'} yet.",
            now_s,
        )
    engagement = sum(p.get(t, 0.0) for t in (EventType.click, EventType.add_to_cart, EventType.purchase))
    behaviour = _behaviour(prediction.attribution, titles)
    if engagement < settings.retain_max_engage_prob:
        return _guidance(
            prediction,
            Action.retain,
            prediction.next_items,
            f"Suggested something new because your interest seems to fade after you {behaviour}.",
            now_s,
        )
    if prediction.next_items and prediction.next_items[0].score >= settings.recommend_min_score:
        return _guidance(
            prediction,
            Action.recommend,
            prediction.next_items,
            f"Recommended {_name(prediction.next_items[0].item_id, titles)} because you recently {behaviour}.",
            now_s,
        )
    return None


def _guidance(
    prediction: Prediction, action: Action, items: list[ScoredItem], explanation: str, now_s: float
) -> Guidance:
    return Guidance(
        user_id=prediction.user_id,
        action=action,
        items=items,
        explanation=explanation,
        attribution=prediction.attribution,
        event_ids=prediction.event_ids,
        model=prediction.model,
        emitted_at=now_s,
    )


def _known_titles(prediction: Prediction) -> dict[str, str]:
    known = [*prediction.attribution, *prediction.next_items]
    return {x.item_id: x.title for x in known if x.title}


def _name(item_id: str, titles: dict[str, str]) -> str:
    return titles.get(item_id) or f"item {item_id}"


def _behaviour(attribution: Sequence[Attribution], titles: dict[str, str]) -> str:
    """'clicked A and viewed B' for the heaviest distinct (event type, item) pairs of the attribution."""
    pairs = list(dict.fromkeys((a.event_type, a.item_id) for a in attribution))[:EXPLAINED_EVENTS]
    if not pairs:
        return "browsed"
    return _join([_DID[event_type].format(_name(item_id, titles)) for event_type, item_id in pairs])


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
