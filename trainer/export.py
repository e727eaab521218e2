"""Write a servable version folder: encoder.onnx (checked against torch), item_embeddings.npy, items.json,
the text adapter that ``add-items`` needs, and report.json."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.numpy import save_file

from trainer.data import TEST, Dataset
from trainer.evaluate import onnx_encoder
from trainer.modeling import RecModel
from trainer.publish import EMBEDDINGS_FILE, ENCODER_FILE, ITEMS_FILE, REPORT_FILE, TEXT_ADAPTER_FILE
from trainer.sequences import ENCODER_INPUTS, ENCODER_OUTPUTS, encoder_inputs, eval_cases
from trainer.text import TEXT_MODEL
from trainer.train import item_table, torch_encoder

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4


def export_encoder(model: RecModel, path: Path, example: dict[str, np.ndarray]) -> None:
    """ONNX export of ``model.encoder`` with dynamic batch and window length (TorchScript exporter)."""
    model.eval()
    args = tuple(torch.from_numpy(example[n]) for n in ENCODER_INPUTS)
    dynamic = {name: {0: "batch", 1: "window"} for name in ENCODER_INPUTS}
    dynamic |= {name: {0: "batch"} for name in ENCODER_OUTPUTS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            model.encoder,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(ENCODER_INPUTS),
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


def write_catalog(out: Path, table: np.ndarray, item_ids: list[str], titles: list[str | None]) -> None:
    """``item_embeddings.npy`` (row 0 zeros) and ``items.json`` (rows 1..N)."""
    if len(table) != len(item_ids) + 1 or np.any(table[0]):
        raise ValueError("the item table needs one zero padding row plus one row per item")
    np.save(out / EMBEDDINGS_FILE, table.astype(np.float32))
    (out / ITEMS_FILE).write_bytes(orjson.dumps({"item_ids": item_ids, "titles": titles}))


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))


def export_version(model: RecModel, dataset: Dataset, report: dict[str, Any], out: Path) -> None:
    """Fill the (new, empty) folder ``out`` with everything a version needs."""
    table = item_table(model)  # [N+1, H]
    cases = eval_cases(dataset, TEST, model.cfg.max_len).arrays
    samples = [encoder_inputs(cases, table, slice(0, 64)), encoder_inputs(cases, table, slice(0, 3))]
    samples[1] = {name: values[:, -7:] for name, values in samples[1].items()}  # another B and L
    export_encoder(model, out / ENCODER_FILE, samples[0])
    report = {**report, "onnx_parity_max_abs_diff": check_parity(model, out / ENCODER_FILE, samples)}
    write_catalog(out, table, dataset.catalog.item_ids, dataset.catalog.titles)
    new_item_adapter = model.new_item_adapter()
    if new_item_adapter is not None:
        adapter = {name: p.detach().numpy() for name, p in new_item_adapter.named_parameters()}
        save_file(adapter, str(out / TEXT_ADAPTER_FILE), metadata={"text_model": TEXT_MODEL})
        (out / TEXT_ADAPTER_FILE).chmod(0o644)  # safetensors writes 0600; the server may be another user
    write_report(out / REPORT_FILE, report)
