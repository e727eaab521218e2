"""README's configuration table is what `recstream config --markdown` prints: it cannot drift from the settings."""

from __future__ import annotations

import re
from pathlib import Path

from recstream.status import settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_settings_table_is_generated_from_the_settings() -> None:
    text = README.read_text()
    table = re.search(
        r"<!-- settings table: recstream config --markdown -->\n(.*?)<!-- end of settings table -->", text, re.S
    )
    assert table, "README has the generated settings table"
    assert table[1] == settings_markdown(), "regenerate it: recstream config --markdown"
