"""Topic creation and the stack id, against the real embedded broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recstream.broker import Broker
from recstream.errors import StackError
from recstream.processes import free_ports
from recstream.topics import cluster_stack_id, ensure_topics, reset_stale_state
from stream.settings import Settings


def test_topics_are_created_with_their_partition_counts_and_checked(broker: Broker, stack_settings: Settings) -> None:
    asyncio.run(ensure_topics(stack_settings, {"t-four": 4, "t-one": 1}))
    asyncio.run(ensure_topics(stack_settings, {"t-four": 4}))  # existing and matching: fine
    with pytest.raises(StackError, match="t-four has 4 partitions, the stack is configured for 2"):
        asyncio.run(ensure_topics(stack_settings, {"t-four": 2}))


def test_a_new_broker_cluster_gets_a_new_stack_id_and_old_state_is_wiped(
    broker: Broker, stack_settings: Settings, tmp_path: Path
) -> None:
    first = asyncio.run(cluster_stack_id(stack_settings))
    assert asyncio.run(cluster_stack_id(stack_settings)) == first, "stable while the broker lives"

    data_dir = tmp_path / "worker"
    assert not reset_stale_state(data_dir, first)
    (data_dir / "table.db").write_text("state")
    assert not reset_stale_state(data_dir, first), "same cluster: state kept"
    assert (data_dir / "table.db").exists()

    (port,) = free_ports(1)
    other = stack_settings.model_copy(update={"broker_port": port, "bootstrap_servers": f"127.0.0.1:{port}"})
    with Broker(other, tmp_path / "log"):
        fresh = asyncio.run(cluster_stack_id(other))
    assert fresh != first
    assert reset_stale_state(data_dir, fresh), "another cluster: state wiped"
    assert not (data_dir / "table.db").exists()


def test_unreachable_broker_is_one_clear_error(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(StackError, match=f"cannot reach Kafka at 127.0.0.1:{port}"):
        asyncio.run(ensure_topics(settings, {"x": 1}, timeout_s=5))
