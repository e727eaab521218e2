"""Guidance policy: what, if anything, to tell a user after a prediction.

Pure functions; :class:`stream.guide.Guide` applies them to every prediction the worker emits. The rules, first
match wins (thresholds come from :class:`Settings`). After them, the guide drops a user still waiting for an
explanation ``guidance_max_delay_s`` after the prediction's emission (:func:`stale`): guidance is about what a
user does now, and under a backlog (a burst, explanations of long windows) shedding keeps the policy from falling
minutes behind the predictions.

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

Deciding needs only the prediction (:func:`decide`); the explanation needs the attribution of the window,
which costs the model about ``attribution_max_events`` more encoder passes, so it is computed only for the
users the policy guides (:meth:`stream.schemas.Scorer.explain`, batched) and then :func:`build_guidance`
writes one plain-language sentence naming the past behaviour that drove the guidance: the cart items for
checkout, else the window events with the largest attribution weight; titles where known.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from stream.schemas import Attribution, EventType, Explained, Guidance, Prediction, ScoredItem, WindowEvent
from stream.settings import Settings
from stream.titles import readable_title
from stream.window import cart_items

#: How many window events an explanation names.
EXPLAINED_EVENTS = 2
#: How many window events a guidance names in ``attribution`` (heaviest first).
ATTRIBUTION_TOP_N = 5


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


def stale(prediction: Prediction, now_s: float, settings: Settings) -> bool:
    """Too late to guide at ``now_s``: more than ``guidance_max_delay_s`` after the prediction was emitted."""
    return now_s - prediction.emitted_at > settings.guidance_max_delay_s


def decide(
    prediction: Prediction, window: Sequence[WindowEvent], last_guidance_at: float | None, settings: Settings
) -> Action | None:
    """Apply the rules above; ``last_guidance_at`` is the cooldown table's value for the user."""
    if last_guidance_at is not None and prediction.emitted_at - last_guidance_at < settings.guidance_cooldown_s:
        return None
    p = prediction.next_action
    if cart_items(window) and p.get(EventType.purchase, 0.0) >= settings.checkout_min_purchase_prob:
        return Action.checkout
    engagement = sum(p.get(t, 0.0) for t in (EventType.click, EventType.add_to_cart, EventType.purchase))
    if engagement < settings.retain_max_engage_prob:
        return Action.retain
    if prediction.next_items and prediction.next_items[0].score >= settings.recommend_min_score:
        return Action.recommend
    return None


def attribution_of(window: Sequence[WindowEvent], explained: Explained) -> list[Attribution]:
    """The ``ATTRIBUTION_TOP_N`` window events that drove the top item most, heaviest first."""
    rows = zip(window, explained.weights, explained.titles, strict=True)
    by_weight = sorted(rows, key=lambda row: row[1], reverse=True)
    return [
        Attribution(item_id=event.item_id, event_type=event.event_type, weight=weight, title=title)
        for event, weight, title in by_weight[:ATTRIBUTION_TOP_N]
    ]


def build_guidance(
    prediction: Prediction,
    action: Action,
    window: Sequence[WindowEvent],
    attribution: Sequence[Attribution],
    *,
    now_s: float,
) -> Guidance:
    """The guidance for ``action`` with its one-sentence explanation."""
    titles = _known_titles(prediction, attribution)
    if action is Action.checkout:
        cart = cart_items(window)
        scores = {item.item_id: item.score for item in prediction.next_items}
        items = [ScoredItem(item_id=i, score=scores.get(i, 0.0), title=titles.get(i)) for i in cart]
        names = _join([_name(i, titles) for i in cart])
        explanation = (
            f"Suggested checking out because you added {names} to your cart and have not bought "
            f"{'it' if len(cart) == 1 else 'them'} yet."
        )
    elif action is Action.retain:
        items = prediction.next_items
        explanation = (
            f"Suggested something new because your interest seems to fade after you {_behaviour(attribution, titles)}."
        )
    else:
        items = prediction.next_items
        top = _name(prediction.next_items[0].item_id, titles)
        explanation = f"Recommended {top} because you recently {_behaviour(attribution, titles)}."
    return Guidance(
        user_id=prediction.user_id,
        action=action,
        items=list(items),
        explanation=explanation,
        attribution=list(attribution),
        event_ids=prediction.event_ids,
        model=prediction.model,
        emitted_at=now_s,
    )


def _known_titles(prediction: Prediction, attribution: Sequence[Attribution]) -> dict[str, str]:
    known = [*attribution, *prediction.next_items]
    return {x.item_id: x.title for x in known if x.title}


def _name(item_id: str, titles: dict[str, str]) -> str:
    title = titles.get(item_id)
    return readable_title(title) if title else f"item {item_id}"


def _behaviour(attribution: Sequence[Attribution], titles: dict[str, str]) -> str:
    """'clicked A and viewed B' for the heaviest distinct (event type, item) pairs of the attribution."""
    pairs = list(dict.fromkeys((a.event_type, a.item_id) for a in attribution))[:EXPLAINED_EVENTS]
    if not pairs:
        return "browsed"
    return _join([_DID[event_type].format(_name(item_id, titles)) for event_type, item_id in pairs])


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
