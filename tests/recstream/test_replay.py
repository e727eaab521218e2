"""Replay: a dataset's events reach the input topics in time order, keyed by user, valid for the worker."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaConsumer

from recstream.broker import Broker
from recstream.replay import events_in_time_order, replay
from recstream.topics import ensure_topics
from stream.schemas import InputEvent
from stream.settings import Settings
from tests.recstream.published import publish_report
from trainer.data import Catalog, build_dataset


def small_dataset():
    catalog = Catalog(["a", "b", "c"], ["A", "B", None], ["A", "B", "c"])
    return build_dataset(
        user_ids=["u1", "u2", "u1", "u2", "u1"],
        item_ids=["a", "b", "c", "a", "b"],
        event_types=["view", "click", "click", "view", "purchase"],
        timestamps=[30.0, 10.0, 20.0, 40.0, 50.0],
        catalog=catalog,
    )


def test_events_come_out_in_time_order_with_unique_ids() -> None:
    events = list(events_in_time_order(small_dataset(), "toy"))
    assert [e.timestamp for e in events] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert [(e.user_id, e.item_id, e.event_type) for e in events][:2] == [("u2", "b", "click"), ("u1", "c", "click")]
    assert len({e.event_id for e in events}) == len(events)


def test_same_second_events_go_out_by_user_then_item_id_whatever_the_file_order() -> None:
    """(timestamp, user_id, item_id): each user's events in the order rule the model was evaluated on."""
    names = ["b", "a", "10", "9", "c"]
    rows = [("v", "b", 5.0), ("u", "10", 5.0), ("v", "a", 5.0), ("u", "9", 5.0), ("u", "c", 1.0), ("u", "a", 5.0)]
    expected = [("u", "c", 1.0), ("u", "10", 5.0), ("u", "9", 5.0), ("u", "a", 5.0), ("v", "a", 5.0), ("v", "b", 5.0)]
    for order in (rows, rows[::-1], rows[2:] + rows[:2]):
        dataset = build_dataset(
            user_ids=[u for u, _, _ in order],
            item_ids=[i for _, i, _ in order],
            event_types=["view"] * len(order),
            timestamps=[t for _, _, t in order],
            catalog=Catalog(names, names, names),
        )
        events = list(events_in_time_order(dataset, "toy"))
        assert [(e.user_id, e.item_id, e.timestamp) for e in events] == expected
        for user in dataset.users:  # the replay order of a user is its sequence order (split, training, evaluation)
            replayed = [e.item_id for e in events if e.user_id == user.user_id]
            assert replayed == [dataset.catalog.item_ids[i - 1] for i in user.items]
        assert len({e.event_id for e in events}) == len(events)


def test_replaying_a_named_dataset_reads_it_from_the_cache(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
        "Heat (1995)\tHeat\t1995\tAction\r\nJumanji (1995)\tJumanji\t1995\tFantasy\r\n"
    )
    (folder / "ml-1m.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
        "1m_1\tJumanji (1995)\t5\t100\r\n1m_1\tHeat (1995)\t2\t100\r\n"
    )
    (folder / "ml-1m.user").write_text(
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\r\n1m_1\t1\tF\t10\t48067\r\n"
    )
    sent = []

    async def fake_replay(settings, events, rate, limit, progress=False):
        sent.extend(events)
        return len(sent)

    monkeypatch.setattr("recstream.replay.replay", fake_replay)
    from recstream.replay import replay_movielens

    assert asyncio.run(replay_movielens(Settings(), rate=0, limit=None, cache_dir=folder, dataset="ml-1m")) == 2
    assert [(e.item_id, e.event_type) for e in sent] == [("Heat (1995)", "view"), ("Jumanji (1995)", "click")]
    assert sent[0].event_id == "ml1m:1m_1:Heat (1995):0"
    # each event carries its user's attributes, as a site would send them
    assert [e.context for e in sent] == [{"age": "1", "gender": "F", "occupation": "10", "region": "4"}] * 2


def test_replay_produces_keyed_valid_events_to_the_input_topics(broker: Broker, stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(update={"topic_views": "replay-views", "topic_clicks": "replay-clicks"})
    asyncio.run(ensure_topics(settings, {settings.topic_views: 2, settings.topic_clicks: 2}))
    sent = asyncio.run(replay(settings, events_in_time_order(small_dataset(), "toy"), rate=0, limit=4))
    assert sent == 4

    async def consume() -> list:
        consumer = AIOKafkaConsumer(
            settings.topic_views,
            settings.topic_clicks,
            bootstrap_servers=settings.bootstrap_servers,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got = []
            while len(got) < sent:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend(records)
            return got
        finally:
            await consumer.stop()

    records = asyncio.run(asyncio.wait_for(consume(), 30))
    by_topic = {r.topic for r in records}
    assert by_topic == {"replay-views", "replay-clicks"}
    for record in records:
        event = InputEvent.from_bytes(record.value)
        assert record.key == event.user_id.encode()
        assert (record.topic == "replay-views") == (event.event_type == "view")
    assert sorted(orjson.loads(r.value)["timestamp"] for r in records) == [10.0, 20.0, 30.0, 40.0]


def test_cli_replay_has_a_command_per_dataset_and_up_passes_the_dataset_through(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from recstream.cli import app

    calls = []

    async def fake_replay_movielens(settings, rate, limit, cache_dir=None, dataset="ml-100k", progress=False):
        calls.append(("replay", dataset, rate, limit))
        return 0

    monkeypatch.setattr("recstream.replay.replay_movielens", fake_replay_movielens)
    runner = CliRunner()
    for command, dataset in (("ml-1m", "ml-1m"), ("ml-100k", "ml-100k"), ("movielens", "ml-100k")):
        result = runner.invoke(app, ["replay", command, "--rate", "0", "--limit", "5"])
        assert result.exit_code == 0, result.output
        assert calls.pop() == ("replay", dataset, 0.0, 5)

    def fake_run_stack(settings, **options):
        calls.append(options | {"model": settings.model_name, "window": settings.window_max_events})

    monkeypatch.setattr("recstream.stack.run_stack", fake_run_stack)
    for model, history in (("recstream", 50), ("recstream-ml-1m", 200)):  # a version of each dataset's model
        publish_report(tmp_path / model / "1", max_len=history)
    up = ["--model-repository", str(tmp_path), "up"]
    assert runner.invoke(app, [*up, "--dataset", "ml-1m", "--duration-s", "1"]).exit_code == 0
    assert calls.pop() == {
        "replay": True,
        "rate": 50.0,
        "limit": None,
        "duration_s": 1.0,
        "dataset": "ml-1m",
        "model": "recstream-ml-1m",
        "window": 200,
    }
    assert runner.invoke(app, [*up, "--no-replay"]).exit_code == 0
    assert (calls[-1]["dataset"], calls.pop()["model"]) == ("ml-100k", "recstream")
    assert runner.invoke(app, ["up", "--dataset", "ml-20m"]).exit_code != 0
