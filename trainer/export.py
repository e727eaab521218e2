"""Write a servable version folder: encoder.onnx (checked against torch), item_embeddings.npy, items.json,
context.json (a ``use_context`` model's), the text adapter that ``add-items`` needs, and report.json (their
formats: ``trainer.version``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.data import TEST, Dataset
from trainer.evaluate import Encoder, onnx_encoder
from trainer.modeling import RecModel
from trainer.sequences import ENCODER_OUTPUTS, encoder_input_names, encoder_inputs, eval_cases
from trainer.text import TEXT_MODELS
from trainer.version import (
    ENCODER_FILE,
    REPORT_FILE,
    ItemFiles,
    Report,
    write_context,
    write_item_files,
    write_report,
    write_text_adapter,
)

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4


class _Positional(nn.Module):
    """The encoder with exactly ``names`` as its positional inputs (the exported graph's), passed on by name:
    ``SequenceEncoder.forward`` has every optional input in its signature, an encoder takes only some."""

    def __init__(self, encoder: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder, self.names = encoder, names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(**dict(zip(self.names, inputs, strict=True)))


def torch_encoder(model: RecModel) -> Encoder:
    """The model's sequence encoder as an ``evaluate.Encoder`` (numpy in, numpy out, no gradients): what the
    exported encoder.onnx is checked against."""

    names = encoder_input_names(model.cfg.use_time, model.cfg.use_context)

    def run(inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            user_vec, action_logits = model.encoder(**{n: torch.from_numpy(inputs[n]) for n in names})
        return user_vec.numpy(), action_logits.numpy()

    return run


def item_table(model: RecModel) -> np.ndarray:
    """float32 [N+1, H]: the served item embeddings (no id dropout; row 0 zeros)."""
    model.eval()
    with torch.inference_mode():
        return model.item_table().numpy()


def export_encoder(model: RecModel, path: Path, example: dict[str, np.ndarray]) -> None:
    """ONNX export of ``model.encoder`` with dynamic batch and window length (TorchScript exporter); it takes
    ``hour`` and ``weekday`` only when trained with ``use_time``, ``context`` only with ``use_context``."""
    model.eval()
    names = encoder_input_names(model.cfg.use_time, model.cfg.use_context)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    dynamic = {name: {0: "batch", 1: "window"} for name in names}
    dynamic |= {name: {0: "batch"} for name in ENCODER_OUTPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            _Positional(model.encoder, names).eval(),  # the exporter puts back the mode it found
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(names),
            output_names=list(ENCODER_OUTPUTS),
            dynamic_axes=dynamic,
        )


def check_parity(model: RecModel, path: Path, samples: list[dict[str, np.ndarray]]) -> float:
    """Largest |onnxruntime - torch| over ``samples``; raises if above ``PARITY_ATOL``."""
    worst = 0.0
    torch_run, onnx_run = torch_encoder(model), onnx_encoder(path)
    for inputs in samples:
        for expected, got in zip(torch_run(inputs), onnx_run(inputs), strict=True):
            worst = max(worst, float(np.abs(expected - got).max()))
    if worst > PARITY_ATOL:
        raise RuntimeError(f"encoder.onnx differs from the torch encoder by {worst:.2e} (> {PARITY_ATOL})")
    logger.info("ONNX parity: max |diff| %.2e over %d batches", worst, len(samples))
    return worst


def export_version(model: RecModel, dataset: Dataset, report: Report, out: Path) -> None:
    """Fill the (new, empty) folder ``out`` with everything a version needs."""
    table = item_table(model)  # [N+1, H]
    cases = eval_cases(dataset, TEST, model.cfg.max_len).arrays
    samples = [encoder_inputs(cases, table, slice(0, 64)), encoder_inputs(cases, table, slice(0, 3))]
    samples[1] = {name: values[:, -7:] for name, values in samples[1].items()}  # another B and L
    export_encoder(model, out / ENCODER_FILE, samples[0])
    report = report.model_copy(update={"onnx_parity_max_abs_diff": check_parity(model, out / ENCODER_FILE, samples)})
    write_item_files(out, ItemFiles(table, dataset.catalog.item_ids, dataset.catalog.titles))
    if model.cfg.use_context:
        write_context(out, dataset.context)
    new_item_adapter = model.new_item_adapter()
    if new_item_adapter is not None:
        adapter = {name: p.detach().numpy() for name, p in new_item_adapter.named_parameters()}
        tuned = model.text_top.merged() if model.text_top is not None else None
        write_text_adapter(out, adapter, TEXT_MODELS[model.cfg.text_model].name, tuned)
    write_report(out / REPORT_FILE, report)
