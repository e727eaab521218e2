"""Every topic and table name of the worker, importable without Faust (the launcher, tests and benchmarks).

The worker never declares topics: ``topic_names`` lists each with its partition count (the tables'
changelog topics included) for the launcher to create before the worker starts.
"""

from __future__ import annotations

from stream.settings import Settings

#: user_id -> UserWindow.to_bytes() (raw bytes: JSON made by pydantic-core)
WINDOWS_TABLE = "windows"
#: user_id -> emitted_at of the prediction that triggered the user's last guidance
COOLDOWN_TABLE = "guidance-cooldown"


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def changelog_topics(settings: Settings) -> frozenset[str]:
    """The tables' changelogs: compacted, so a key's latest value (or its tombstone) is what they keep."""
    return frozenset(changelog_topic(settings, table) for table in (WINDOWS_TABLE, COOLDOWN_TABLE))


def input_topics(settings: Settings) -> tuple[str, str]:
    return settings.topic_views, settings.topic_clicks


def topic_names(settings: Settings) -> dict[str, int]:
    """Every topic the worker reads or writes, with its partition count (create them all before starting)."""
    names = [
        *input_topics(settings),
        settings.topic_events,
        settings.topic_predictions,
        settings.topic_guidance,
        settings.topic_dead_letters,
        settings.topic_control,
        *sorted(changelog_topics(settings)),
    ]
    return dict.fromkeys(names, settings.partitions)
