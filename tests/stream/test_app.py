from __future__ import annotations

from pathlib import Path

from stream.app import build_app
from stream.names import topic_names
from stream.settings import Settings


def test_topic_names_cover_every_topic_and_changelog_of_the_app(tmp_path: Path) -> None:
    settings = Settings(partitions=3, app_id="rs-test", data_dir=tmp_path)
    app = build_app(settings)
    names = topic_names(settings)
    assert set(names.values()) == {3}
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    consumed = {topic for agent in app.agents.values() for topic in agent.channel.topics}
    produced = {settings.topic_events, settings.topic_predictions, settings.topic_guidance, settings.topic_dead_letters}
    assert set(names) == changelogs | consumed | produced
    assert all(table.partitions == 3 for table in app.tables.values())
