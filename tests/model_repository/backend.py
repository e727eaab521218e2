"""``model_repository/recstream/model.py`` imported in this process (for its pure functions), with the python
backend's ``triton_python_backend_utils`` of the nvidia-pytriton wheel that the served model imports."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from recstream.triton import _pytriton_dir
from tests.model_repository.tiny_version import MODEL_DIR


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_model_module() -> ModuleType:
    """The served ``model.py`` as module ``recstream_model`` (loaded once per process)."""
    if "recstream_model" not in sys.modules:
        utils = _pytriton_dir() / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
        _load("triton_python_backend_utils", utils)
        _load("recstream_model", MODEL_DIR / "model.py")
    return sys.modules["recstream_model"]
