"""Kafka consumer tuning for latency: Faust's aiokafka transport with two settings of ours.

- ``consumer_fetch_max_wait_ms``: faust-streaming 0.15 passes ``fetch_max_wait_ms=1500`` to the worker's
  ``AIOKafkaConsumer`` and offers no setting for it. On a broker that answers a waiting fetch only when the wait
  runs out (tansu), every Kafka hop costs that wait; on any broker it bounds how soon an idle consumer sees data.
- ``consumer_empty_fetch_pause_ms`` (:func:`pace_empty_fetches`): noida-db 0.2.3 answers a fetch that finds no
  data at once instead of holding it up to the fetch wait, so an idle aiokafka consumer fetches ~900 times a
  second and burns about half a core (measured here: 47 % for one consumer of 4 empty partitions). After an
  empty answer that came back sooner than the pause, the fetch waits out the rest: ~80 fetches a second, 8 %
  of a core, and new data waits at most the pause longer. On a broker that holds fetches (Apache Kafka) an
  empty answer takes the full fetch wait, so the pause never applies.

- ``leave_group_on_stop`` (:func:`leave_group_on_close`): a static member (``group_instance_id``) never sends
  LeaveGroup when it closes (aiokafka follows Kafka's rule), so its partitions wait for the broker to expire its
  session; noida-db never does, and the partitions stall until the worker comes back. With the setting on, a
  clean stop sends LeaveGroup after its last commit, as Kafka 4.1's ``CloseOptions`` (KIP-1092) lets a static
  member choose, and the group rebalances at once.

The transport is registered as the ``recstream`` scheme (entry point ``faust.transports`` in pyproject.toml), so
the app's broker URL ``recstream://host:port`` selects it; ``stream.app`` puts the :class:`ConsumerTuning` on
the app as ``TUNING_ATTR`` (Faust's settings object takes no unknown keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import aiokafka
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest
from faust.transport.drivers import aiokafka as faust_aiokafka

logger = logging.getLogger(__name__)

TUNING_ATTR = "recstream_consumer_tuning"


@dataclass(frozen=True)
class ConsumerTuning:
    fetch_max_wait_ms: int
    empty_fetch_pause_ms: float
    leave_group_on_stop: bool


def pace_empty_fetches(consumer: aiokafka.AIOKafkaConsumer, pause_ms: float) -> None:
    """Make a started consumer wait out ``pause_ms`` after a fetch that came back empty sooner than that.

    aiokafka has no hook for this: the started consumer's fetcher gets a wrapped ``_proc_fetch_request``
    (aiokafka 0.14 is pinned; tests/stream/test_kafka.py measures the effect on the real broker).
    """
    fetcher = consumer._fetcher
    if pause_ms <= 0 or fetcher is None:
        return
    fetch, pause_s = fetcher._proc_fetch_request, pause_ms / 1000

    async def paced(assignment: Any, node_id: int, request: Any) -> bool:
        started = time.monotonic()
        has_new_data = await fetch(assignment, node_id, request)
        if not has_new_data and (left_s := pause_s - (time.monotonic() - started)) > 0:
            # the fetcher cancels its pending fetches on close and expects them to end quietly
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(left_s)
        return has_new_data

    fetcher._proc_fetch_request = paced


def leave_group_on_close(consumer: aiokafka.AIOKafkaConsumer) -> None:
    """Make a started group consumer send LeaveGroup when it closes, also as a static member.

    aiokafka's coordinator leaves on close (after the final offset commit) only without ``group_instance_id``:
    its ``close`` is wrapped so that its leave step sends LeaveGroup in any case. Only there: the same step also
    runs when the consumer has not fetched for ``max_poll_interval``, where a static member keeps aiokafka's way
    (it rejoins under its instance id). Pinned: aiokafka 0.14; tests/integration/test_scale_in.py checks the
    hand-over on the real broker.
    """
    coordinator = consumer._coordinator
    if coordinator is None:
        return
    close, maybe_leave = coordinator.close, coordinator._maybe_leave_group
    closing = False

    async def leave() -> None:
        if not closing or coordinator.generation <= 0:
            await maybe_leave()
            return
        try:
            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        except KafkaError as exc:  # best effort, as aiokafka's own: the session expires it otherwise
            logger.warning("leaving group %s failed: %r", coordinator.group_id, exc)
        else:
            logger.info("left group %s", coordinator.group_id)
        coordinator.reset_generation()

    async def close_and_leave() -> None:
        nonlocal closing
        closing = True
        await close()

    coordinator._maybe_leave_group = leave
    coordinator.close = close_and_leave


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _tuning(self) -> ConsumerTuning:
        return getattr(self.app, TUNING_ATTR)

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # the one value Faust hard-codes; aiokafka reads it when the consumer starts (pinned: aiokafka 0.14)
        consumer._fetch_max_wait_ms = self._tuning().fetch_max_wait_ms
        return consumer

    async def on_start(self) -> None:
        await super().on_start()  # creates and starts the consumer, and with it its fetcher
        pace_empty_fetches(self._consumer, self._tuning().empty_fetch_pause_ms)
        if self._tuning().leave_group_on_stop:
            leave_group_on_close(self._consumer)


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[Consumer]] = Consumer
