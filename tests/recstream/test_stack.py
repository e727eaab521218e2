"""The embedded stack's worker replicas: distinct ports, state and member ids; no more workers than partitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from recstream.stack import replica_settings
from stream.settings import Settings


def test_worker_replicas_get_their_own_port_state_and_member_id() -> None:
    base = Settings(workers=3, web_port=7000, data_dir=Path("var/worker"), group_instance_id="host-a")
    replicas = [replica_settings(base, i) for i in range(base.workers)]
    assert replicas[0] == base, "worker 0 is the configured worker"
    assert [r.web_port for r in replicas] == [7000, 7001, 7002]
    assert [r.data_dir for r in replicas] == [Path("var/worker"), Path("var/worker-1"), Path("var/worker-2")]
    assert [r.group_instance_id for r in replicas] == ["host-a", "host-a-1", "host-a-2"]
    assert replica_settings(Settings(workers=2), 1).group_instance_id is None, "the default id comes from data_dir"


def test_more_workers_than_partitions_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"workers \(5\) > partitions \(4\)"):
        Settings(workers=5, partitions=4)
