"""Titles as people write them: catalogues such as MovieLens file "Fugitive, The (1993)" under F."""

from __future__ import annotations

import re

#: Articles that catalogues move behind a comma ("Postino, Il"), in the languages MovieLens titles use.
ARTICLES = ("The", "A", "An", "Il", "La", "Le", "Les", "L'", "Lo", "Los", "Las", "El", "Das", "Der", "Die", "Det",
            "Den", "De", "Het", "Un", "Une", "O", "I")  # fmt: skip
_MOVED = re.compile(r"^(?P<rest>.+), (?P<article>" + "|".join(re.escape(a) for a in ARTICLES) + r")$")
_TRAILING_GROUP = re.compile(r"^(?P<head>.*?)\s*\((?P<inner>[^()]*)\)$")


def readable_title(title: str) -> str:
    """'Usual Suspects, The (1995)' -> 'The Usual Suspects (1995)'; parenthesised alternative titles too."""
    groups: list[str] = []
    head = title.strip()
    while (match := _TRAILING_GROUP.match(head)) and match["head"]:
        groups.insert(0, _front_article(match["inner"].strip()))
        head = match["head"].strip()
    return " ".join([_front_article(head), *(f"({group})" for group in groups)])


def _front_article(text: str) -> str:
    match = _MOVED.match(text)
    if match is None:
        return text
    article = match["article"]
    return f"{article}{match['rest']}" if article.endswith("'") else f"{article} {match['rest']}"
