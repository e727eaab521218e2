"""A served model that rejects some input, for the poison tests and the fault benchmark.

``build_poison_repository(root)`` writes a model repository whose model ``recstream`` has the real
``config.pbtxt`` (copied from ``model_repository/recstream``), the tiny version of
``tests.model_repository.tiny_version`` and, as its ``model.py``, a python-backend wrapper around the real
``model.py``: a request whose ``ITEM_IDS`` contain :data:`POISON_ITEM` gets INVALID_ARG (a non-transient
error: the worker's client does not retry it), every other request is scored by the real model. Triton's
dynamic batcher may put several requests into one ``execute``: only the poisoned ones fail.
"""

from __future__ import annotations

from pathlib import Path

from tests.model_repository.tiny_version import MODEL_DIR, build_repository

POISON_ITEM = "poison"
#: what the model answers a poisoned request (the worker's dead letter quotes it)
POISON_ERROR = "the test model rejects item 'poison'"

_WRAPPER = f'''"""The real recstream model.py, except that a request with item {POISON_ITEM!r} is rejected."""

import importlib.util
from pathlib import Path

import triton_python_backend_utils as pb_utils

_spec = importlib.util.spec_from_file_location("served_model", Path(__file__).resolve().parent / "served_model.py")
_served = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_served)


class TritonPythonModel(_served.TritonPythonModel):
    def execute(self, requests):
        responses = [None] * len(requests)
        healthy = []
        for i, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "ITEM_IDS").as_numpy()
            if (ids == {POISON_ITEM.encode()!r}).any():
                error = pb_utils.TritonError({POISON_ERROR!r}, pb_utils.TritonError.INVALID_ARG)
                responses[i] = pb_utils.InferenceResponse(error=error)
            else:
                healthy.append(i)
        if healthy:
            for i, response in zip(healthy, super().execute([requests[i] for i in healthy])):
                responses[i] = response
        return responses
'''


def build_poison_repository(root: Path) -> Path:
    """``root/recstream``: the real config.pbtxt, a tiny version 1, and the poison-rejecting model.py."""
    build_repository(root)
    model_dir = root / "recstream"
    (model_dir / "model.py").unlink()  # a link to the real model.py: the wrapper takes its place
    (model_dir / "served_model.py").symlink_to(MODEL_DIR / "model.py")
    (model_dir / "model.py").write_text(_WRAPPER)
    return root
