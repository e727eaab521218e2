"""Child processes of the embedded stack: start in their own process group, stop without orphans."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

from recstream.errors import StackError

logger = logging.getLogger(__name__)


def ensure_port_free(port: int, what: str, host: str = "127.0.0.1") -> None:
    """Raise StackError with one clear line if something already listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackError(f"{what}: port {host}:{port} is already in use ({exc.strerror})") from None


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (for tests and benchmarks)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start argv in a new process group, stdout and stderr to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        try:
            proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"{name}: cannot start {argv[0]}: {exc.strerror}") from None
    logger.info("%s started (pid %d), log: %s", name, proc.pid, log_path)
    return proc


def terminate(name: str, proc: subprocess.Popen | None, timeout_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
            logger.info("%s stopped (exit %s)", name, proc.returncode)
            return
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop on %s", name, sig.name)


class ChildProcess:
    """A part of the stack run as a child process: subclasses start it, this stops it with its process group."""

    name = "child"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self._proc = spawn(self.name, argv, self.log_path, env=env)
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        terminate(self.name, self._proc)
        self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """True if ``url`` answers HTTP 200 (a readiness or health probe); False on any error."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(log_path: Path, lines: int = 15) -> str:
    if not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
