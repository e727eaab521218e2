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
#: What a model folder shares with the default model's (links): the tensors and the backend are defined once.
SHARED_MODEL_FILES = ("config.pbtxt", "model.py")
#: The dataset whose versions are the default model's (the others: their own model, item ids differ).
DEFAULT_MODEL_DATASET = "ml-100k"


def model_name(dataset: str | None) -> str:
    """The Triton model a dataset's versions are published as: ``recstream`` for MovieLens-100K and for event
    logs (``--events``), ``recstream-<dataset>`` for another named dataset. Datasets have different item ids, so
    their versions cannot follow one another in one model; the worker picks one with ``settings.model_name``."""
    return MODEL_NAME if dataset in (None, DEFAULT_MODEL_DATASET) else f"{MODEL_NAME}-{dataset}"


def model_folder(repository: Path, name: str) -> Path:
    """``repository/name``, made on first use as a second model of the same contract: its ``config.pbtxt`` and
    ``model.py`` are links to the default model's (the config names no model: Triton names it after its folder)."""
    folder = repository / name
    if name != MODEL_NAME:
        folder.mkdir(parents=True, exist_ok=True)
        for file in SHARED_MODEL_FILES:
            if not (folder / file).exists():
                (folder / file).symlink_to(Path("..") / MODEL_NAME / file)
    return folder


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


def load_in_triton(triton_url: str, model: str, timeout_s: float = 120) -> None:
    """Ask a running Triton (gRPC ``host:port``, the worker's ``--triton-url``) to (re)load ``model``, so it
    serves the newest version (explicit model control mode); raises InferenceServerException on failure."""
    with InferenceServerClient(triton_url) as client:
        client.load_model(model, client_timeout=timeout_s)
    logger.info("Triton %s loaded %s", triton_url, model)
