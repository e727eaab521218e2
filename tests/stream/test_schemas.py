"""stream.schemas.model_context: the part of an event's context that the model reads."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stream.schemas import CONTEXT_MAX_CHARS, CONTEXT_MAX_KEYS, model_context

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


def test_scalars_become_text_and_the_rest_is_left_out() -> None:
    context = {
        "device": " tv ",
        "age": 25.0,
        "visits": 3,
        "ratio": 0.5,
        "vip": True,
        "tags": ["a"],
        "where": {"city": "Lyon"},
        "none": None,
        "blob": "x" * (CONTEXT_MAX_CHARS + 1),
        "": "no key",
        "empty": "",
    }
    assert model_context(context) == {"age": "25", "device": "tv", "ratio": "0.5", "visits": "3", "vip": "true"}
    assert model_context(None) == {}


@given(st.dictionaries(st.text(max_size=70), JSON, max_size=30))
def test_the_kept_context_is_bounded_ordered_and_stable(context: dict) -> None:
    kept = model_context(orjson.loads(orjson.dumps(context)))  # as it arrives in a record
    assert len(kept) <= CONTEXT_MAX_KEYS and list(kept) == sorted(kept)
    assert all(0 < len(k) <= CONTEXT_MAX_CHARS and 0 < len(v) <= CONTEXT_MAX_CHARS for k, v in kept.items())
    assert model_context(kept) == kept  # a replayed or re-keyed event keeps the same context
