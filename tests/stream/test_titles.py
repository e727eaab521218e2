from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.titles import readable_title


@pytest.mark.parametrize(
    ("catalogue", "readable"),
    [
        ("Fugitive, The", "The Fugitive"),
        ("American President, The (1995)", "The American President (1995)"),
        ("Horseman on the Roof, The (Hussard sur le toit, Le)", "The Horseman on the Roof (Le Hussard sur le toit)"),
        ("Enfer, L'", "L'Enfer"),
        ("Postino, Il (1994)", "Il Postino (1994)"),
        ("Affair to Remember, An", "An Affair to Remember"),
        ("Kiss Me, Guido", "Kiss Me, Guido"),
        ("Seven (Se7en)", "Seven (Se7en)"),
        ("To Be or Not to Be", "To Be or Not to Be"),
        ("(1995)", "(1995)"),
    ],
)
def test_articles_move_to_the_front(catalogue: str, readable: str) -> None:
    assert readable_title(catalogue) == readable


@given(st.text(max_size=60))
def test_any_text_gives_a_title_and_readable_titles_stay(text: str) -> None:
    once = readable_title(text)
    assert isinstance(once, str)
    if ", " not in text and "(" not in text:
        assert once == text.strip()
