"""Triton python backend of the recstream model, shared by all versions (each ``<N>/model.py`` links here).

Runs inside Triton's python stub, so it imports nothing from this project. One ``execute`` call scores
every row of every request of the dynamic batch together: one encoder run for all windows, then one for
the occluded variants (the attribution) of the rows whose request asked for ATTRIBUTION. Each response
carries only the outputs its request asked for (all of them when the client named none: Triton's rule), and
only as many top items as its ``top_k`` request parameter asks for (at most the config's ``top_k``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from threadpoolctl import threadpool_limits

#: Must equal ``stream.schemas.EVENT_TYPES`` (a test checks it); event type i is encoded 1 + i, 0 = padding.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")

INPUTS = ("ITEM_IDS", "EVENT_TYPES", "TIMESTAMPS")
#: Optional input: item ids the user already consumed (older than the window too), left out of the top items.
OPTIONAL_EXCLUDE = "EXCLUDE_IDS"
#: Optional input: per row, the events' context ({"values": [objects], "events": [indices]}, "" for none).
OPTIONAL_CONTEXT = "CONTEXT"
OUTPUTS = ("TOP_ITEMS", "TOP_SCORES", "TOP_TITLES", "NEXT_ACTION", "ATTRIBUTION", "INPUT_TITLES")
#: Outputs aligned with the input positions ([B, L]); the others are [B, top_k] or [B, 4].
_PER_POSITION = frozenset({"ATTRIBUTION", "INPUT_TITLES"})
#: Outputs of the top items ([B, top_k]): cut to the request's top_k parameter.
_PER_RANK = frozenset({"TOP_ITEMS", "TOP_SCORES", "TOP_TITLES"})
#: Occluded windows per encoder call (memory bound: rows x L x H floats of item vectors).
_OCCLUSION_ROWS = 2048
_EVENT_CODES: dict[bytes, int] = {name.encode(): i + 1 for i, name in enumerate(EVENT_TYPES)}
#: Encoder inputs of a version trained with the time of the events (trainer.config use_time); others lack them.
TIME_INPUTS = ("hour", "weekday")
#: Encoder input of a version trained with context (trainer.config use_context, its context.json).
CONTEXT_INPUT = "context"
CONTEXT_FILE = "context.json"
_SECONDS_PER_DAY = 86_400

Providers = list[tuple[str, dict[str, Any]]]
#: The optional encoder inputs this version takes, by name: hour and weekday (int64 [N, L]), context (int64
#: [N, L, C]); empty for an encoder that takes none.
Extra = dict[str, np.ndarray]


class RequestError(ValueError):
    """A request that cannot be scored; only that request gets the error."""


class ProviderError(RuntimeError):
    """The instance Triton asks for cannot run with this onnxruntime (``initialize`` fails with it)."""


def execution_providers(kind: str, device_id: int, available: list[str]) -> Providers:
    """onnxruntime providers for a Triton instance of ``kind`` ("GPU", "CPU", ...) on ``device_id``.

    A GPU instance runs the encoder with CUDA on its device (CPU for the operators CUDA lacks); any other
    kind runs on the CPU. A GPU instance without onnxruntime's CUDA provider is an error, never a silent
    CPU fallback.
    """
    if kind != "GPU":
        return [("CPUExecutionProvider", {})]
    if "CUDAExecutionProvider" not in available:
        raise ProviderError(
            f"Triton gave this instance GPU {device_id} (KIND_GPU), but onnxruntime {ort.__version__} has no "
            f"CUDAExecutionProvider (it has {available}): install onnxruntime-gpu in the model's environment, "
            "or serve on the CPU (an instance_group of KIND_CPU, or no visible GPU: CUDA_VISIBLE_DEVICES=)"
        )
    return [("CUDAExecutionProvider", {"device_id": device_id}), ("CPUExecutionProvider", {})]


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    """All graph optimisations, operators run one after the other, each on ``intra_op_threads`` threads
    (0 = onnxruntime's default: one per core). ``inter_op_threads`` only matters in parallel execution mode."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    return options


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def clock(timestamps: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 hour (1 + UTC hour of the day) and weekday (1 + UTC day of the week, Monday = 1) of epoch seconds
    [B, L], 0 where ``mask`` is False: must equal ``trainer.sequences.clock`` (a test checks it)."""
    safe = np.where(mask, timestamps, 0.0)
    days = np.floor_divide(safe, _SECONDS_PER_DAY)
    hour = 1 + ((safe - days * _SECONDS_PER_DAY) // 3600).astype(np.int64)
    weekday = 1 + ((days.astype(np.int64) + 3) % 7)  # 1970-01-01 was a Thursday
    return hour * mask, weekday * mask


def context_token_of(values: dict[str, list[str]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(key, value) -> (slot, token) of a context.json's ``values``: slot k is the k-th key, the j-th value of
    a key whose values start after ``offset`` others is token offset + j + 1 (0 = none or unknown). Must equal
    ``trainer.data.ContextVocabulary.token_of`` (a test checks it)."""
    out, offset = {}, 0
    for slot, (key, key_values) in enumerate(values.items()):
        out.update({(key, value): (slot, offset + j + 1) for j, value in enumerate(key_values)})
        offset += len(key_values)
    return out


def _lookup(table: dict[bytes, int], keys: np.ndarray, missing: int) -> np.ndarray:
    """int64 array of ``table[key]`` for an object array of bytes keys (``missing`` where absent), same shape.
    One dict lookup per element: faster than np.unique, which sorts the objects with Python comparisons."""
    return np.array([table.get(key, missing) for key in keys.flat], dtype=np.int64).reshape(keys.shape)


class _Parsed(NamedTuple):
    index: int  # of the request in execute's list
    rows: np.ndarray  # int64 [B, L] embedding rows (0 = padding/unknown)
    codes: np.ndarray  # int64 [B, L] event codes (0 = padding)
    ages: np.ndarray  # float64 [B, L] seconds to the row's newest event
    mask: np.ndarray  # bool [B, L] real events
    stamps: np.ndarray  # float64 [B, L] epoch seconds (the clock of a use_time encoder)
    context: np.ndarray | None  # int64 [B, L, C] context tokens of a use_context encoder; None: it takes none
    exclude: np.ndarray  # int64 [B, E] embedding rows also left out of the top items (0 = none), E >= 0
    outputs: frozenset[str]  # the output names the request asked for
    top_k: int  # top items the request asked for (its "top_k" parameter, at most the config's)


def _stack(parsed: list[_Parsed], field: str, width: int, dtype: type, left: bool = True) -> np.ndarray:
    """One [N, width, ...] array of every request's ``field`` ([B, L, ...]), rows in request order, each padded
    with 0 to ``width`` on the left (windows: newest event last) or on the right. Filled in place: np.pad per request
    costs ~100 us, most of a small batch's scoring time."""
    arrays = [getattr(p, field) for p in parsed]
    out = np.zeros((sum(a.shape[0] for a in arrays), width, *arrays[0].shape[2:]), dtype=dtype)
    start = 0
    for a in arrays:
        batch, length = a.shape[:2]
        if left:
            out[start : start + batch, width - length :] = a
        else:
            out[start : start + batch, :length] = a
        start += batch
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        for name in INPUTS:
            if pb_utils.get_input_config_by_name(config, name) is None:
                raise pb_utils.TritonModelException(f"config.pbtxt has no input {name}")
        self.output_dtypes: dict[str, np.dtype] = {}
        for name in OUTPUTS:
            output = pb_utils.get_output_config_by_name(config, name)
            if output is None:
                raise pb_utils.TritonModelException(f"config.pbtxt has no output {name}")
            self.output_dtypes[name] = pb_utils.triton_string_to_numpy(output["data_type"])
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.top_k = int(parameters["top_k"])
        self.attribution_max_events = int(parameters["attribution_max_events"])

        kind, device_id = args["model_instance_kind"], int(args["model_instance_device_id"])
        try:
            providers = execution_providers(kind, device_id, ort.get_available_providers())
        except ProviderError as exc:
            raise pb_utils.TritonModelException(str(exc)) from exc
        options = session_options(int(parameters["intra_op_num_threads"]), int(parameters["inter_op_num_threads"]))
        # numpy's BLAS (the catalogue scores): OpenBLAS starts a thread per core, and each idles by spinning
        # after every call; at small batches that spinning cost 5x the CPU of the work itself (docs/BENCHMARKS.md)
        self.blas_threads = int(parameters["blas_num_threads"])
        threadpool_limits(limits=self.blas_threads, user_api="blas")  # for the life of this process
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(str(version_dir / "encoder.onnx"), options, providers=providers)
        takes = {i.name for i in self.session.get_inputs()}
        self.takes_time = takes >= set(TIME_INPUTS)
        self.context_token_of: dict[tuple[str, str], tuple[int, int]] | None = None
        self.context_keys = 0
        if CONTEXT_INPUT in takes:
            values = json.loads((version_dir / CONTEXT_FILE).read_bytes())["values"]
            self.context_token_of, self.context_keys = context_token_of(values), len(values)
        # onnxruntime falls back to the CPU when CUDA cannot start (say, a missing libcudnn): not on a GPU instance
        if providers[0][0] not in self.session.get_providers():
            raise pb_utils.TritonModelException(
                f"onnxruntime could not start {providers[0][0]} for instance {args['model_instance_name']} "
                f"(got {self.session.get_providers()}); see the onnxruntime errors above"
            )
        self.embeddings: np.ndarray = np.load(version_dir / "item_embeddings.npy").astype(np.float32)
        items = json.loads((version_dir / "items.json").read_bytes())  # UTF-8; the stub runs without a locale
        ids: list[str] = items["item_ids"]
        if len(ids) + 1 != self.embeddings.shape[0]:
            raise pb_utils.TritonModelException(
                f"items.json has {len(ids)} items but item_embeddings.npy has {self.embeddings.shape[0]} rows"
            )
        self.row_of: dict[bytes, int] = {item.encode(): row for row, item in enumerate(ids, start=1)}
        # indexed by embedding row (0 = padding/unknown); "" where there is no title or no item
        self.item_ids = np.array([b"", *(item.encode() for item in ids)], dtype=object)
        self.titles = np.array([b"", *((t or "").encode() for t in items["titles"])], dtype=object)
        pb_utils.Logger.log_info(
            f"recstream version {args['model_version']}: {len(ids)} items, H={self.embeddings.shape[1]}, "
            f"time inputs {self.takes_time}, context keys {self.context_keys}, "
            f"top_k={self.top_k}; instance {args['model_instance_name']} kind {kind} device {device_id}, "
            f"onnxruntime providers {self.session.get_providers()}, "
            f"threads intra {options.intra_op_num_threads} inter {options.inter_op_num_threads} "
            f"blas {self.blas_threads}"
        )

    # --- requests -> one batch -------------------------------------------------------------------------

    def _read(self, index: int, request: Any) -> _Parsed:
        """The arrays of one request, each [B, L], and the outputs it asked for; raises RequestError.

        String tensors arrive as object arrays of bytes, looked up one dict access per element.
        """
        ids, types, ts = (pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in INPUTS)
        if not ids.shape == types.shape == ts.shape or ids.ndim != 2:
            raise RequestError(
                "ITEM_IDS, EVENT_TYPES and TIMESTAMPS must have the same shape [batch, events]; got "
                f"{list(ids.shape)}, {list(types.shape)}, {list(ts.shape)}"
            )
        mask = ids != b""
        if not mask.any(axis=1).all():
            raise RequestError("every row needs at least one event (ITEM_IDS all '' in a row)")
        rows = _lookup(self.row_of, ids, 0)
        codes = np.where(mask, _lookup(_EVENT_CODES, types, -1), 0)
        if (codes < 0).any():
            bad = sorted({t.decode(errors="replace") for t in types[codes < 0]})
            raise RequestError(f"unknown event type(s) {bad}; expected one of {list(EVENT_TYPES)}")
        if not np.isfinite(ts[mask]).all():
            raise RequestError("TIMESTAMPS must be finite for real events")
        newest = np.where(mask, ts, -np.inf).max(axis=1, keepdims=True)
        ages = np.where(mask, newest - ts, 0.0)
        exclude = np.zeros((ids.shape[0], 0), dtype=np.int64)
        excluded_ids = pb_utils.get_input_tensor_by_name(request, OPTIONAL_EXCLUDE)
        if excluded_ids is not None:
            excluded_ids = excluded_ids.as_numpy()
            if excluded_ids.ndim != 2 or excluded_ids.shape[0] != ids.shape[0]:
                raise RequestError(f"{OPTIONAL_EXCLUDE} must be [batch, n]; got {list(excluded_ids.shape)}")
            exclude = _lookup(self.row_of, excluded_ids, 0)  # "" and unknown ids -> 0: nothing to leave out
        context = None if self.context_token_of is None else self._context(request, ids.shape)
        # Triton fills in every output when the client names none; the fallback only guards that rule
        outputs = frozenset(request.requested_output_names()) or frozenset(OUTPUTS)
        top_k = json.loads(request.parameters() or "{}").get("top_k", self.top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise RequestError(f"the request parameter top_k must be a positive integer; got {top_k!r}")
        return _Parsed(index, rows, codes, ages, mask, ts, context, exclude, outputs, min(top_k, self.top_k))

    def _context(self, request: Any, shape: tuple[int, ...]) -> np.ndarray:
        """int64 [B, L, C]: the context tokens of the request's CONTEXT (zeros without it). Each row's CONTEXT is
        "" or {"values": [context objects], "events": [index into values per event, oldest first]}, aligned
        with the row's newest events; keys and values the version does not know, and values that are not
        strings, are ignored (token 0)."""
        assert self.context_token_of is not None
        tokens = np.zeros((*shape, self.context_keys), dtype=np.int64)
        tensor = pb_utils.get_input_tensor_by_name(request, OPTIONAL_CONTEXT)
        if tensor is None:
            return tokens
        strings = tensor.as_numpy()
        if strings.shape != (shape[0], 1):
            raise RequestError(f"{OPTIONAL_CONTEXT} must be [batch, 1], batch {shape[0]}; got {list(strings.shape)}")
        for row, text in enumerate(strings[:, 0]):
            if text:
                values, events = self._row_context(text, shape[1])
                tokens[row, shape[1] - len(events) :] = values[events]
        return tokens

    def _row_context(self, text: bytes, length: int) -> tuple[np.ndarray, np.ndarray]:
        """One row's CONTEXT as the tokens of its distinct values [V, C] and each event's index into them."""
        try:
            parsed = json.loads(text)
            values, events = parsed["values"], np.array(parsed["events"], dtype=np.int64)
            if not all(isinstance(v, dict) for v in values) or events.ndim != 1 or len(events) > length:
                raise ValueError("values must be objects, events at most one index per event")
            if len(events) and not 0 <= events.min() <= events.max() < len(values):
                raise ValueError("an event index outside values")
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(
                f'{OPTIONAL_CONTEXT} must be "" or {{"values": [objects], "events": [indices]}} per row: {exc}; '
                f"got {text[:80]!r}"
            ) from exc
        vectors = np.zeros((len(values), self.context_keys), dtype=np.int64)
        for i, pairs in enumerate(values):
            for key, value in pairs.items():
                if isinstance(value, str) and (hit := self.context_token_of.get((key, value))) is not None:
                    vectors[i, hit[0]] = hit[1]
        return vectors, events

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        parsed: list[_Parsed] = []
        for i, request in enumerate(requests):
            try:
                parsed.append(self._read(i, request))
            except RequestError as exc:
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
        if parsed:
            try:
                self._score_all(parsed, responses)
            except Exception as exc:  # the whole batch failed: every request still gets its own response
                pb_utils.Logger.log_error(f"recstream scoring failed: {exc!r}")
                for p in parsed:
                    responses[p.index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"recstream scoring failed: {exc}")
                    )
        return responses

    def _score_all(self, parsed: list[_Parsed], responses: list[Any]) -> None:
        # Requests of one dynamic batch may differ in window length (ragged batching): left-pad to the longest.
        length = max(p.rows.shape[1] for p in parsed)

        rows, codes = _stack(parsed, "rows", length, np.int64), _stack(parsed, "codes", length, np.int64)
        ages, mask = _stack(parsed, "ages", length, np.float32), _stack(parsed, "mask", length, bool)
        extra: Extra = {}
        if self.takes_time:
            extra |= dict(zip(TIME_INPUTS, clock(_stack(parsed, "stamps", length, np.float64), mask), strict=True))
        if self.context_token_of is not None:
            extra[CONTEXT_INPUT] = _stack(parsed, "context", length, np.int64)
        width = max(p.exclude.shape[1] for p in parsed)
        exclude = _stack(parsed, "exclude", width, np.int64, left=False)
        attribute = np.concatenate([np.full(p.rows.shape[0], "ATTRIBUTION" in p.outputs) for p in parsed])
        outputs = self._score(rows, codes, ages, mask, extra, exclude, attribute)
        start = 0
        for p in parsed:
            batch, width = p.rows.shape
            tensors = []
            for name in OUTPUTS:  # the config's order, only those asked for
                if name not in p.outputs:
                    continue
                part = outputs[name][start : start + batch]
                if name in _PER_POSITION:
                    part = part[:, length - width :]
                elif name in _PER_RANK:
                    part = part[:, : p.top_k]
                tensors.append(pb_utils.Tensor(name, part.astype(self.output_dtypes[name])))
            responses[p.index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += batch

    # --- the model ---------------------------------------------------------------------------------------

    def _encode(
        self, rows: np.ndarray, codes: np.ndarray, ages: np.ndarray, mask: np.ndarray, extra: Extra
    ) -> tuple[np.ndarray, np.ndarray]:
        feeds = {
            "item_vecs": self.embeddings[rows],
            "event_types": codes,
            "age_s": ages,
            "attention_mask": mask.astype(np.int64),
        }
        feeds |= extra
        user_vec, action_logits = self.session.run(["user_vec", "action_logits"], feeds)
        return user_vec, action_logits

    def _score(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        ages: np.ndarray,
        mask: np.ndarray,
        extra: Extra,
        exclude: np.ndarray,
        attribute: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Every output for every row [N, L], except ATTRIBUTION: computed for the ``attribute`` rows only.
        ``exclude`` [N, E]: more embedding rows per row to leave out of the top items (0 = none)."""
        catalogue = self.embeddings[1:]
        user_vec, action_logits = self._encode(rows, codes, ages, mask, extra)
        logits = user_vec @ catalogue.T  # [N, C]
        probs = _softmax(logits)
        # leave out each row's own (known) window items and the items it excludes, then take the top k
        r, pos = np.nonzero(mask & (rows > 0))
        probs[r, rows[r, pos] - 1] = -1.0
        r, pos = np.nonzero(exclude > 0)
        probs[r, exclude[r, pos] - 1] = -1.0
        k = min(self.top_k, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(probs, top, axis=1), axis=1), axis=1)
        top_scores = np.take_along_axis(probs, top, axis=1)
        excluded = top_scores < 0  # only when the catalogue has fewer than k items outside the window
        top_rows = np.where(excluded, 0, top + 1)
        return {
            "TOP_ITEMS": self.item_ids[top_rows],
            "TOP_SCORES": np.where(excluded, 0.0, top_scores),
            "TOP_TITLES": self.titles[top_rows],
            "NEXT_ACTION": _softmax(action_logits),
            "ATTRIBUTION": self._attribution(rows, codes, ages, mask, extra, user_vec, top[:, 0], attribute),
            "INPUT_TITLES": self.titles[np.where(mask, rows, 0)],
        }

    def _attribution(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        ages: np.ndarray,
        mask: np.ndarray,
        extra: Extra,
        user_vec: np.ndarray,
        top1: np.ndarray,
        attribute: np.ndarray,
    ) -> np.ndarray:
        """Occlusion: top-1 logit of the window minus the same logit with one event masked out.

        Only the ``attribute`` rows (bool [N]) are attributed, the others get 0 (their requests did not ask
        for it), and only the newest ``attribution_max_events`` events of a window are occluded (the cost
        grows with rows x occluded events); older events get 0. All variants of all rows run as one encoder
        batch (in chunks of _OCCLUSION_ROWS, which bound the memory of big batches). A row's only event gets
        the whole logit (masking it leaves no evidence, taken as logit 0). Padding gets 0.
        """
        attribution = np.zeros(rows.shape, dtype=np.float32)
        if not attribute.any():
            return attribution
        top_vecs = self.embeddings[top1 + 1]  # [N, H]
        full_logit = (user_vec * top_vecs).sum(axis=1)  # [N]
        counts = mask.sum(axis=1)
        newest = np.arange(rows.shape[1]) >= rows.shape[1] - self.attribution_max_events  # left-padded rows
        r, pos = np.nonzero(mask & newest[None, :] & (attribute & (counts > 1))[:, None])
        for chunk in range(0, r.size, _OCCLUSION_ROWS):
            cr, cpos = r[chunk : chunk + _OCCLUSION_ROWS], pos[chunk : chunk + _OCCLUSION_ROWS]
            keep = mask[cr].copy()
            keep[np.arange(cr.size), cpos] = False
            # the window without that event: padding is 0 everywhere, ages from the newest remaining event
            kept_ages = np.where(keep, ages[cr], np.inf)
            kept_ages = np.where(keep, kept_ages - kept_ages.min(axis=1, keepdims=True), 0.0)
            kept_extra = {
                name: np.where(keep.reshape(keep.shape + (1,) * (v.ndim - 2)), v[cr], 0) for name, v in extra.items()
            }
            occluded_vec, _ = self._encode(
                np.where(keep, rows[cr], 0), np.where(keep, codes[cr], 0), kept_ages, keep, kept_extra
            )
            attribution[cr, cpos] = full_logit[cr] - (occluded_vec * top_vecs[cr]).sum(axis=1)
        single = attribute & (counts == 1)
        attribution[single] = np.where(mask[single], full_logit[single, None], 0.0)
        return attribution
