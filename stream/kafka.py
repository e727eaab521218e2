"""Faust's aiokafka transport with the consumer's fetch wait as a setting (``consumer_fetch_max_wait_ms``).

faust-streaming 0.15 passes ``fetch_max_wait_ms=1500`` to the worker's ``AIOKafkaConsumer`` and offers no
setting for it. On a broker that answers a waiting fetch only when the wait runs out (tansu), every Kafka
hop costs that wait; on any broker it bounds how soon an idle consumer sees new data. This transport is
registered as the ``recstream`` scheme (entry point ``faust.transports`` in pyproject.toml), so the app's
broker URL ``recstream://host:port`` selects it; ``stream.app`` puts the wait on the app as
``FETCH_MAX_WAIT_ATTR`` (Faust's settings object takes no unknown keys).
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_ATTR = "recstream_fetch_max_wait_ms"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # the one value Faust hard-codes; aiokafka reads it when the consumer starts (pinned: aiokafka 0.14)
        consumer._fetch_max_wait_ms = int(getattr(self.app, FETCH_MAX_WAIT_ATTR))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[Consumer]] = Consumer
