"""Where model.py runs: the onnxruntime providers for Triton's instance kind, the session options from
config.pbtxt, and the CPU instance that Triton makes here (no GPU) really running on onnxruntime's CPU."""

from __future__ import annotations

import re
from pathlib import Path

import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from tests.model_repository.backend import load_model_module
from tests.model_repository.tiny_version import MODEL_DIR, build_repository, serve

CUDA_AND_CPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_a_gpu_instance_runs_cuda_on_its_device_then_cpu() -> None:
    model = load_model_module()
    assert model.execution_providers("GPU", 3, CUDA_AND_CPU) == [
        ("CUDAExecutionProvider", {"device_id": 3}),
        ("CPUExecutionProvider", {}),
    ]


@pytest.mark.parametrize("kind", ["CPU", "MODEL"])
def test_other_instances_run_on_the_cpu(kind: str) -> None:
    model = load_model_module()
    assert model.execution_providers(kind, 0, CUDA_AND_CPU) == [("CPUExecutionProvider", {})]


def test_a_gpu_instance_without_cuda_is_a_clear_error() -> None:
    model = load_model_module()
    with pytest.raises(model.ProviderError, match=r"GPU 1 .*no CUDAExecutionProvider.*install onnxruntime-gpu"):
        model.execution_providers("GPU", 1, ["AzureExecutionProvider", "CPUExecutionProvider"])


def test_session_options() -> None:
    options = load_model_module().session_options(2, 1)
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)


def _parameter(name: str) -> str:
    config = (MODEL_DIR / "config.pbtxt").read_text()
    return re.search(rf'"{name}" value: \{{ string_value: "(\d+)"', config)[1]  # type: ignore[index]


@pytest.mark.integration
def test_the_instance_here_runs_on_the_cpu(tmp_path: Path) -> None:
    """No GPU here: Triton makes a KIND_CPU instance of the KIND_AUTO group, and model.py's session runs on
    onnxruntime's CPU provider with config.pbtxt's threads (the log line model.py writes at load says so)."""
    repository = build_repository(tmp_path / "repo")
    with (
        serve(repository, tmp_path / "work") as settings,
        grpcclient.InferenceServerClient(settings.triton_url) as client,
    ):
        config = client.get_model_config(settings.model_name, as_json=True)["config"]
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 1)]
    log = (tmp_path / "work" / "tritonserver.log").read_text(errors="replace")
    lines = [line for line in log.splitlines() if "recstream version 1:" in line]
    assert len(lines) == 1, log[-2000:]
    assert "kind CPU device 0" in lines[0]
    assert "onnxruntime providers ['CPUExecutionProvider']" in lines[0]
    intra, inter = _parameter("intra_op_num_threads"), _parameter("inter_op_num_threads")
    assert f"threads intra {intra} inter {inter} blas {_parameter('blas_num_threads')}" in lines[0]
