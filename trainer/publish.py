"""Atomic publishing of a model version: build in ``<model>/.tmp-<random>``, then rename it to the next
integer version. A published version is never overwritten; a reader (Triton) never sees half a version."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tritonclient.grpc import InferenceServerClient

logger = logging.getLogger(__name__)

MODEL_NAME = "recstream"
SHARED_MODEL_PY = "../model.py"


def versions(model_dir: Path) -> list[int]:
    """The published version numbers, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def publish(model_dir: Path, build: Callable[[Path], None]) -> Path:
    """Call ``build(folder)`` to fill a fresh temporary folder, link ``model.py`` to the shared
    implementation, and rename the folder to the next free version number. Returns the version folder."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        build(tmp)
        os.symlink(SHARED_MODEL_PY, tmp / "model.py")
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the server may run as another user
        while True:
            target = model_dir / str(max(versions(model_dir), default=0) + 1)
            try:
                os.rename(tmp, target)  # atomic; fails on an existing non-empty folder
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                continue  # another publisher took that number: take the next one
            break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("published %s", target)
    return target


def load_in_triton(triton_url: str, model: str = MODEL_NAME, timeout_s: float = 120) -> None:
    """Ask a running Triton (gRPC ``host:port``, the worker's ``--triton-url``) to (re)load ``model``, so it
    serves the newest version (explicit model control mode); raises InferenceServerException on failure."""
    with InferenceServerClient(triton_url) as client:
        client.load_model(model, client_timeout=timeout_s)
    logger.info("Triton %s loaded %s", triton_url, model)
