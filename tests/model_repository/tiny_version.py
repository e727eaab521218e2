"""A tiny but real model version for tests and benchmarks: same files and tensors as a trained one.

The encoder (built with ``onnx.helper``, no torch) weights each window event by
``type_weight[event_type] * exp(-age_s / 1 day) * attention_mask`` (a ``use_time`` version, like one trained
with ``TrainConfig.use_time``, also takes ``hour`` and ``weekday`` and multiplies the weight by a positive
``hour_weight[hour] * weekday_weight[weekday]``; a ``use_context`` version, like one trained with
``TrainConfig.use_context``, takes ``context`` [B, L, C] and its ``context.json`` and multiplies the weight by
the product of a positive ``context_weight[token]`` over the C keys, 1 for token 0); ``user_vec`` is the weighted
mean of the item vectors and
``action_logits = user_vec @ W``. Usable as a script:
``python -m tests.model_repository.tiny_version OUT_REPOSITORY`` writes ``OUT_REPOSITORY/recstream/1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from recstream.stack import local_settings
from recstream.triton import TritonServer
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "model_repository" / "recstream"
HIDDEN = 16
N_ITEMS = 200
DAY_S = 86400.0
TYPE_WEIGHT = (0.0, 1.0, 2.0, 3.0, 4.0)  # by event code: 0 padding, then view, click, add_to_cart, purchase
#: the context.json of a use_context version: two keys, five tokens
CONTEXT_VALUES = {"device": ["mobile", "tv", "web"], "region": ["1", "2"]}


def item_ids(n_items: int = N_ITEMS) -> list[str]:
    return [f"item-{i:04d}" for i in range(n_items)]


def _encoder(rng: np.random.Generator, use_time: bool = False, use_context: bool = False) -> onnx.ModelProto:
    type_weight = np.array(TYPE_WEIGHT, dtype=np.float32)
    action_w = rng.normal(size=(HIDDEN, 4)).astype(np.float32)
    inits = [
        numpy_helper.from_array(type_weight, "type_weight"),
        numpy_helper.from_array(action_w, "action_w"),
        numpy_helper.from_array(np.array(-1.0 / DAY_S, dtype=np.float32), "neg_inv_day"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "seq_axis"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Gather", ["type_weight", "event_types"], ["tw"]),
        helper.make_node("Mul", ["age_s", "neg_inv_day"], ["neg_days"]),
        helper.make_node("Exp", ["neg_days"], ["decay"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["tw", "decay"], ["w0"]),
        helper.make_node("Mul", ["w0", "maskf"], ["w"]),  # [B, L]
    ]
    inputs = [
        helper.make_tensor_value_info("item_vecs", TensorProto.FLOAT, ["B", "L", HIDDEN]),
        helper.make_tensor_value_info("event_types", TensorProto.INT64, ["B", "L"]),
        helper.make_tensor_value_info("age_s", TensorProto.FLOAT, ["B", "L"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"]),
    ]
    weight = "w"  # the event weight [B, L], multiplied by the optional inputs' factors
    if use_time:
        hour_weight = np.concatenate([[0.0], rng.uniform(0.2, 5.0, 24)]).astype(np.float32)  # 0: padding
        weekday_weight = np.concatenate([[0.0], rng.uniform(0.2, 5.0, 7)]).astype(np.float32)
        inits += [numpy_helper.from_array(hour_weight, "hour_weight")]
        inits += [numpy_helper.from_array(weekday_weight, "weekday_weight")]
        inputs += [helper.make_tensor_value_info(n, TensorProto.INT64, ["B", "L"]) for n in ("hour", "weekday")]
        nodes += [
            helper.make_node("Gather", ["hour_weight", "hour"], ["hw"]),
            helper.make_node("Gather", ["weekday_weight", "weekday"], ["ww"]),
            helper.make_node("Mul", ["hw", "ww"], ["clock_w"]),
            helper.make_node("Mul", [weight, "clock_w"], ["w_timed"]),
        ]
        weight = "w_timed"
    if use_context:
        tokens = sum(len(v) for v in CONTEXT_VALUES.values())
        context_weight = np.concatenate([[1.0], rng.uniform(0.2, 5.0, tokens)]).astype(np.float32)  # 0: none
        inits += [numpy_helper.from_array(context_weight, "context_weight")]
        inputs += [helper.make_tensor_value_info("context", TensorProto.INT64, ["B", "L", len(CONTEXT_VALUES)])]
        nodes += [
            helper.make_node("Gather", ["context_weight", "context"], ["cw"]),  # [B, L, C]
            helper.make_node("ReduceProd", ["cw"], ["context_w"], axes=[-1], keepdims=0),  # [B, L]
            helper.make_node("Mul", [weight, "context_w"], ["w_context"]),
        ]
        weight = "w_context"
    nodes += [
        helper.make_node("Unsqueeze", [weight, "last_axis"], ["w3"]),  # [B, L, 1]
        helper.make_node("Mul", ["item_vecs", "w3"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "seq_axis"], ["num"], keepdims=0),  # [B, H]
        helper.make_node("ReduceSum", ["w3", "seq_axis"], ["den0"], keepdims=0),  # [B, 1]
        helper.make_node("Max", ["den0", "eps"], ["den"]),
        helper.make_node("Div", ["num", "den"], ["user_vec"]),
        helper.make_node("MatMul", ["user_vec", "action_w"], ["action_logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_recstream_encoder",
        inputs,
        [
            helper.make_tensor_value_info("user_vec", TensorProto.FLOAT, ["B", HIDDEN]),
            helper.make_tensor_value_info("action_logits", TensorProto.FLOAT, ["B", 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_version(
    model_dir: Path, version: str, seed: int = 0, use_time: bool = False, use_context: bool = False
) -> Path:
    """Publish ``model_dir/version`` atomically: build it under ``.tmp-<version>``, then rename."""
    rng = np.random.default_rng(seed)
    tmp = model_dir / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    onnx.save(_encoder(rng, use_time, use_context), tmp / "encoder.onnx")
    if use_context:
        (tmp / "context.json").write_text(json.dumps({"values": CONTEXT_VALUES}))
    embeddings = np.zeros((N_ITEMS + 1, HIDDEN), dtype=np.float32)
    embeddings[1:] = rng.normal(size=(N_ITEMS, HIDDEN))
    np.save(tmp / "item_embeddings.npy", embeddings)
    titles = [None if i % 7 == 0 else f"Titré {i}" for i in range(N_ITEMS)]  # non-ASCII on purpose
    (tmp / "items.json").write_bytes(
        json.dumps({"item_ids": item_ids(), "titles": titles}, ensure_ascii=False).encode()
    )
    (tmp / "model.py").symlink_to("../model.py")
    final = model_dir / version
    os.rename(tmp, final)
    return final


def build_repository(root: Path, seed: int = 0, use_time: bool = False, use_context: bool = False) -> Path:
    """A model repository ``root/recstream`` with the real config.pbtxt and model.py and a tiny version 1."""
    model_dir = root / "recstream"
    model_dir.mkdir(parents=True)
    shutil.copy(MODEL_DIR / "config.pbtxt", model_dir / "config.pbtxt")
    (model_dir / "model.py").symlink_to(MODEL_DIR / "model.py")
    write_version(model_dir, "1", seed, use_time, use_context)
    return root


@contextlib.contextmanager
def serve(repository: Path, work_dir: Path, **overrides: object) -> Iterator[Settings]:
    """The real tritonserver on free local ports serving repository; yields the settings that reach it."""
    settings = local_settings(model_repository=repository, **overrides)
    with TritonServer(settings, work_dir=work_dir) as server:
        server.wait_ready()
        yield settings


if __name__ == "__main__":
    build_repository(Path(sys.argv[1]))
