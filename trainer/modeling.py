"""The recommender: item vectors (id embedding + projected item text) fed to a causal GPT-2 encoder.

Shapes: B users (rows), L window positions (left-padded, newest event at L-1), H hidden size,
N catalogue items (item row 0 is padding / unknown), T = len(EVENT_TYPES) = 4 next-action classes, C context keys.

A batch is a dict of tensors:
    items           int64   [B, L]  catalogue rows (0 = padding)
    event_types     int64   [B, L]  0 padding, else 1 + index in EVENT_TYPES
    age_s           float32 [B, L]  seconds from the event to the row's newest event (0 for padding)
    attention_mask  int64   [B, L]  1 real event, 0 padding
    hour            int64   [B, L]  1 + UTC hour of the day of the event (0 padding)
    weekday         int64   [B, L]  1 + UTC day of the week, Monday = 1 (0 padding)
    context         int64   [B, L, C]  the event's token of each of C context keys (0: none or unknown)
  for ``loss`` (the next event after every position, 0 = no target there):
    next_items      int64   [B, L]
    next_types      int64   [B, L]
  for ``predict``:
    target_items    int64   [B]

``hour`` and ``weekday`` are read only by a model trained with ``TrainConfig.use_time``, ``context`` only by one
trained with ``use_context`` (their encoder.onnx takes them; older versions' do not). The exported part is
``SequenceEncoder`` (inputs: item vectors, not ids), so new catalogue rows are scored without touching it: item
scores are ``user_vec @ item_table.T``.

Training and evaluation call a model only through ``Recommender`` (RecBole's contract), which ``RecModel`` and
``Ensemble`` implement.
"""

from __future__ import annotations

import copy
import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2Model

from stream.schemas import EVENT_TYPES
from trainer.config import TrainConfig
from trainer.text import TunedTextTop

Batch = dict[str, torch.Tensor]

GAP_BUCKETS = 32  # bucket 0: no earlier event in the window; bucket 1 + floor(log2(1 + gap seconds)) else


def gap_buckets(age_s: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # [B, L] int64
    """Bucketed seconds since the previous real event of the window (0 for padding and the first event).

    Only gaps are used, not the ages themselves: ages are relative to the newest event, which moves with the
    prefix in causal training, while the gap between two events does not. Masked-out events (padding, or
    occluded ones in the middle of a window) are skipped, as if absent.
    """
    length = age_s.shape[1]
    positions = torch.arange(length, device=age_s.device)
    earlier = (positions[None, :] < positions[:, None])[None] & attention_mask[:, None, :].bool()  # [B, L, L]
    previous_age = age_s[:, None, :].masked_fill(~earlier, float("inf")).amin(-1)  # [B, L]: inf if none
    has_previous = torch.isfinite(previous_age) & attention_mask.bool()  # [B, L]
    gap = torch.where(has_previous, previous_age - age_s, torch.zeros_like(age_s)).clamp(min=0)  # [B, L]
    bucket = 1 + torch.floor(torch.log2(1 + gap)).clamp(0, GAP_BUCKETS - 2).long()  # [B, L]
    return bucket * has_previous.long()


def newest(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:  # [B, H]
    """The hidden state at each row's newest real event (the last position, unless it is masked out)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # [L]
    last = (attention_mask * positions).argmax(-1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]


class SequenceEncoder(nn.Module):
    """Window -> user vector and next-action logits. Exactly the ``encoder.onnx`` contract."""

    def __init__(self, cfg: TrainConfig, context_tokens: int = 0) -> None:
        """``context_tokens``: the size of the context vocabulary (``trainer.data.ContextVocabulary.tokens``)."""
        super().__init__()
        self.max_len = cfg.max_len
        self.type_emb = nn.Embedding(1 + len(EVENT_TYPES), cfg.hidden, padding_idx=0)
        self.gap_emb = nn.Embedding(GAP_BUCKETS, cfg.hidden)
        self.use_gaps = cfg.use_gaps
        # when in the day and the week each event happened (UTC): 0 padding, 1..24 and 1..7
        self.hour_emb = nn.Embedding(25, cfg.hidden, padding_idx=0) if cfg.use_time else None
        self.weekday_emb = nn.Embedding(8, cfg.hidden, padding_idx=0) if cfg.use_time else None
        self.time_inputs = cfg.time_inputs
        # what the event carried (MovieLens: its user's attributes); zero at first, so a token training never
        # saw adds nothing, as an unknown one (0) does
        self.context_emb = None
        if cfg.use_context:
            if not context_tokens:
                raise ValueError("use_context needs events with context (the data carries none)")
            self.context_emb = nn.Embedding(1 + context_tokens, cfg.hidden, padding_idx=0)
            nn.init.zeros_(self.context_emb.weight)
        gpt_config = GPT2Config(
            n_embd=cfg.hidden,
            n_layer=cfg.layers,
            n_head=cfg.heads,
            n_positions=cfg.max_len,
            vocab_size=1,  # unused: the model is fed inputs_embeds
            bos_token_id=None,
            eos_token_id=None,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            resid_pdrop=cfg.dropout,
        )
        gpt_config._attn_implementation = "eager"  # traceable for the ONNX export
        self.gpt = GPT2Model(gpt_config)
        self.action_head = nn.Linear(cfg.hidden, len(EVENT_TYPES))

    def hidden_states(
        self,
        item_vecs: torch.Tensor,  # [B, L, H]
        event_types: torch.Tensor,  # [B, L]
        age_s: torch.Tensor,  # [B, L]
        attention_mask: torch.Tensor,  # [B, L]
        hour: torch.Tensor | None = None,  # [B, L]: read only with use_time
        weekday: torch.Tensor | None = None,  # [B, L]
        context: torch.Tensor | None = None,  # [B, L, C]: read only with use_context
    ) -> torch.Tensor:  # [B, L', H], L' = min(L, max_len): causal, position t sees events <= t
        item_vecs, event_types = item_vecs[:, -self.max_len :], event_types[:, -self.max_len :]
        age_s, attention_mask = age_s[:, -self.max_len :], attention_mask[:, -self.max_len :]
        gaps = gap_buckets(age_s, attention_mask)  # [B, L']
        if not self.use_gaps:  # every event in bucket 0 (one constant vector); age_s stays an input of the graph
            gaps = torch.zeros_like(gaps)
        x = item_vecs + self.type_emb(event_types) + self.gap_emb(gaps)  # [B, L', H]
        if self.hour_emb is not None and self.weekday_emb is not None:
            if hour is None or weekday is None:
                raise ValueError("this encoder was trained with use_time: it needs hour and weekday")
            hour, weekday = hour[:, -self.max_len :], weekday[:, -self.max_len :]
            if self.time_inputs == "weekday":  # every hour padding (a zero vector); hour stays an input of the graph
                hour = torch.zeros_like(hour)
            if self.time_inputs == "hour":
                weekday = torch.zeros_like(weekday)
            x = x + self.hour_emb(hour) + self.weekday_emb(weekday)
        if self.context_emb is not None:
            if context is None:
                raise ValueError("this encoder was trained with use_context: it needs context")
            x = x + self.context_emb(context[:, -self.max_len :]).sum(-2)  # [B, L', C, H] -> [B, L', H]
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, L']: 0 = oldest real event
        out = self.gpt(inputs_embeds=x, attention_mask=attention_mask, position_ids=positions)
        return out.last_hidden_state  # [B, L', H]

    def forward(
        self,
        item_vecs: torch.Tensor,  # [B, L, H]
        event_types: torch.Tensor,  # [B, L]
        age_s: torch.Tensor,  # [B, L]
        attention_mask: torch.Tensor,  # [B, L]
        hour: torch.Tensor | None = None,  # [B, L]
        weekday: torch.Tensor | None = None,  # [B, L]
        context: torch.Tensor | None = None,  # [B, L, C]
    ) -> tuple[torch.Tensor, torch.Tensor]:  # user_vec [B, H], action_logits [B, T]
        hidden = self.hidden_states(item_vecs, event_types, age_s, attention_mask, hour, weekday, context)
        user_vec = newest(hidden, attention_mask[:, -self.max_len :])  # [B, H]
        return user_vec, self.action_head(user_vec)


@runtime_checkable
class Recommender(Protocol):
    """What training and evaluation call on a model, RecBole's contract (its ``calculate_loss``, ``predict`` and
    ``full_sort_predict``): training steps on ``loss``; evaluation ranks ``full_sort_predict`` with the one ranking
    routine (``trainer.evaluate.target_ranks``, its tie rule) and reads the next-action logits of ``encode``. D is
    the user vector's size: H, or K*H for an ensemble of K."""

    def loss(self, batch: Batch) -> torch.Tensor:  # scalar
        """The training loss of a batch with ``next_items`` and ``next_types``."""
        ...

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:  # user_vec [B, D], action_logits [B, T]
        """The user vector and the next-action logits at each row's newest event."""
        ...

    def predict(self, batch: Batch) -> torch.Tensor:  # [B]
        """The score of each row's ``target_items``: its column of ``full_sort_predict``."""
        ...

    def full_sort_predict(self, batch: Batch) -> torch.Tensor:  # [B, N]
        """The score of every catalogue item (column j = item row j + 1), higher first."""
        ...


def ridge_map(
    texts: torch.Tensor,  # [n, D]
    targets: torch.Tensor,  # [n, H]
    ridge: float,
) -> tuple[torch.Tensor, torch.Tensor]:  # weight [H, D], bias [H]
    """Ridge regression of the centred ``targets`` on the centred ``texts`` (penalty ``ridge``, solved in float64):
    ``texts @ weight.T + bias`` predicts how far an item's target lies from the mean target from how far its text
    lies from the mean text (the mean text maps to zero)."""
    x, y = texts.double(), targets.double()
    mean = x.mean(0)  # [D]
    x, y = x - mean, y - y.mean(0)
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)  # [D, H]
    return w.T.to(texts.dtype), -(mean @ w).to(texts.dtype)


class ItemTableModel(nn.Module):
    """The scoring half of ``Recommender``, shared by ``RecModel`` and ``Ensemble``, which differ only in their
    ``item_table`` and ``encoder``: the encoder reads the window's item vectors, and an item's score is the user
    vector @ its row, exactly what the served encoder.onnx and item_embeddings.npy compute."""

    encoder: nn.Module  # (item_vecs [B, L, D], event_types, age_s, attention_mask, hour, weekday, context)
    #                      -> ([B, D], [B, T])

    def item_table(self) -> torch.Tensor:  # [N+1, D]; row 0 is zeros
        raise NotImplementedError

    def _inputs(self, batch: Batch, table: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder's inputs: item rows looked up in ``table`` [N+1, D] -> item_vecs [B, L, D]; ``hour``,
        ``weekday`` and ``context`` where the batch has them."""
        fields = (batch.get(name) for name in ("hour", "weekday", "context"))
        return table[batch["items"]], batch["event_types"], batch["age_s"], batch["attention_mask"], *fields

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:  # user_vec [B, D], action_logits [B, T]
        return self.encoder(*self._inputs(batch, self.item_table()))

    def full_sort_predict(self, batch: Batch) -> torch.Tensor:  # [B, N]
        table = self.item_table()  # [N+1, D]: drawn once, so the window and the scored items agree
        user_vec, _ = self.encoder(*self._inputs(batch, table))  # [B, D]
        return user_vec @ table[1:].T  # [B, N]

    def predict(self, batch: Batch) -> torch.Tensor:  # [B]
        table = self.item_table()  # [N+1, D]
        user_vec, _ = self.encoder(*self._inputs(batch, table))  # [B, D]
        return (user_vec * table[batch["target_items"]]).sum(-1)  # [B]


class RecModel(ItemTableModel):
    """Item table + sequence encoder, trained with full-softmax cross-entropy over the catalogue."""

    def __init__(
        self,
        cfg: TrainConfig,
        text_vectors: np.ndarray,
        has_id: np.ndarray,
        withheld: np.ndarray | None = None,
        context_tokens: int = 0,
        text_top: TunedTextTop | None = None,
    ) -> None:
        """``text_vectors``: float32 [N, D] sentence embeddings of the item texts (``cfg.text_model``'s);
        ``has_id``: bool [N], the items that get an id embedding (those in the training data; the rest are
        scored by text only); ``withheld``: bool [N], items kept out of training entirely, also as negatives
        of the training softmax (else training would learn that they never come next); ``context_tokens``: the
        size of the data's context vocabulary (read with ``use_context``); ``text_top``: the text model's tuned top
        (``cfg.text_lora_rank``), which then re-embeds the item texts instead of ``text_vectors``."""
        super().__init__()
        self.cfg = cfg
        num_items = len(has_id)
        self.id_emb = nn.Embedding(num_items + 1, cfg.hidden)
        nn.init.normal_(self.id_emb.weight, std=1 / math.sqrt(cfg.hidden))
        text_dim = text_vectors.shape[1]  # D
        self.text_adapter = nn.Linear(text_dim, cfg.hidden) if cfg.use_text else None
        self.unknown_id = nn.Parameter(torch.zeros(cfg.hidden))  # [H]: stands in for a missing id embedding
        self.register_buffer("text", torch.from_numpy(np.vstack([np.zeros((1, text_dim)), text_vectors])).float())
        self.register_buffer("has_id", torch.from_numpy(np.concatenate([[False], has_id])).float())  # [N+1]
        withheld = np.zeros(num_items, dtype=bool) if withheld is None else withheld
        trained = np.flatnonzero(~withheld)  # the training softmax's columns -> catalogue columns
        column = np.full(num_items, -1)
        column[trained] = np.arange(len(trained))
        self.register_buffer("softmax_items", torch.from_numpy(trained))  # [N']
        self.register_buffer("softmax_column", torch.from_numpy(column))  # [N]: -1 for withheld items
        self.encoder = SequenceEncoder(cfg, context_tokens)
        self.text_top = text_top
        # the text map of the items without an id embedding, text [.., D] -> [.., H]: zero until fit_text_map
        self.register_buffer("text_map_weight", torch.zeros(cfg.hidden, text_dim))  # [H, D]
        self.register_buffer("text_map_bias", torch.zeros(cfg.hidden))  # [H]

    def item_texts(self) -> torch.Tensor:  # [N+1, D]; row 0 is zeros
        """The items' text vectors: fixed, or re-embedded by the tuned text top."""
        return self.text if self.text_top is None else F.pad(self.text_top(), (0, 0, 1, 0))

    def item_table(self) -> torch.Tensor:  # [N+1, H]; row 0 is zeros
        """Id embedding (where the item has one, else the learned ``unknown_id``) + projected text. In
        training, a random ``id_dropout`` share of the items lose their id part for this batch, so the text
        part learns to score alone and ``unknown_id`` learns where an item without history stands."""
        keep = self.has_id  # [N+1]
        if self.training and self.cfg.id_dropout > 0:
            keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout)
        is_item = torch.ones_like(keep)
        is_item[0] = 0
        table = self.id_emb.weight * keep[:, None] + self.unknown_id * (is_item - keep)[:, None]  # [N+1, H]
        if self.text_adapter is not None:
            texts = self.item_texts()  # [N+1, D]
            table = table + self.text_adapter(texts) * is_item[:, None]  # [N+1, H]
            if not self.training:  # fitted after training (fit_text_map), zero before
                table = table + F.linear(texts, self.text_map_weight, self.text_map_bias) * (is_item - keep)[:, None]
        return table

    @torch.no_grad()
    def fit_text_map(self, ridge: float, scale: float = 1.0) -> None:
        """Fit the text map of the items without an id embedding (``TrainConfig.text_map_ridge``) on the items
        with one: :func:`ridge_map` from their text vectors to their id embeddings, times ``scale``."""
        has_id = self.has_id[1:] > 0  # [N]
        weight, bias = ridge_map(self.item_texts()[1:][has_id], self.id_emb.weight[1:][has_id], ridge)
        self.text_map_weight.copy_(weight * scale)
        self.text_map_bias.copy_(bias * scale)

    def new_item_adapter(self) -> nn.Linear | None:
        """Text embedding [.., D] -> the item row of an item without id embedding [.., H] (text
        projection + ``unknown_id`` + the fitted text map, if any): what ``add-items`` appends. None without text."""
        if self.text_adapter is None:
            return None
        adapter = copy.deepcopy(self.text_adapter)
        with torch.no_grad():
            adapter.weight += self.text_map_weight
            adapter.bias += self.unknown_id + self.text_map_bias
        return adapter

    def loss(self, batch: Batch) -> torch.Tensor:  # scalar
        """Next-item cross-entropy over the whole catalogue + weighted next-type cross-entropy, at every
        position that has a next event (training windows are ``max_len`` long)."""
        table = self.item_table()  # [N+1, H]
        hidden = self.encoder.hidden_states(*self._inputs(batch, table))  # [B, L, H]
        has_target = batch["next_items"] > 0  # [B, L]
        h = hidden[has_target]  # [M, H]
        item_logits = h @ table[1:][self.softmax_items].T  # [M, N']: withheld items are not even negatives
        targets = self.softmax_column[batch["next_items"][has_target] - 1]  # [M]
        item_loss = F.cross_entropy(item_logits, targets)
        action_loss = F.cross_entropy(self.encoder.action_head(h), batch["next_types"][has_target] - 1)
        return item_loss + self.cfg.action_weight * action_loss


class EnsembleEncoder(nn.Module):
    """K member encoders as one ``encoder.onnx``: item vectors are the members' item vectors side by side
    ``[.., K*H]``; the user vector is the members' side by side, scaled by 1/K, so that
    ``user_vec @ item_table.T`` is the mean of the members' logits. Next-action logits are averaged."""

    def __init__(self, encoders: list[SequenceEncoder]) -> None:
        super().__init__()
        self.members = nn.ModuleList(encoders)
        self.max_len = encoders[0].max_len

    def forward(
        self,
        item_vecs: torch.Tensor,  # [B, L, K*H]
        event_types: torch.Tensor,  # [B, L]
        age_s: torch.Tensor,  # [B, L]
        attention_mask: torch.Tensor,  # [B, L]
        hour: torch.Tensor | None = None,  # [B, L]
        weekday: torch.Tensor | None = None,  # [B, L]
        context: torch.Tensor | None = None,  # [B, L, C]: C context keys
    ) -> tuple[torch.Tensor, torch.Tensor]:  # user_vec [B, K*H], action_logits [B, T]
        chunks = item_vecs.chunk(len(self.members), dim=-1)  # K x [B, L, H]
        window = (event_types, age_s, attention_mask, hour, weekday, context)
        outputs = [m(c, *window) for m, c in zip(self.members, chunks, strict=True)]
        user_vec = torch.cat([u for u, _ in outputs], dim=-1) / len(outputs)  # [B, K*H]
        action_logits = torch.stack([a for _, a in outputs]).mean(0)  # [B, T]
        return user_vec, action_logits


class Ensemble(ItemTableModel):
    """RecModels trained with different seeds, served as one model with the same surface (``encoder``,
    ``item_table``, ``new_item_adapter``, ``cfg``, the ``Recommender`` methods): a new item's row is every
    member's new-item row side by side, so ``add-items`` works unchanged."""

    text_top = None  # the members' text models stay frozen (a tuned one needs members=1)

    def __init__(self, models: list[RecModel]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.cfg = models[0].cfg
        self.encoder = EnsembleEncoder([m.encoder for m in models])

    def item_table(self) -> torch.Tensor:  # [N+1, K*H]
        return torch.cat([m.item_table() for m in self.models], dim=-1)

    def loss(self, batch: Batch) -> torch.Tensor:  # scalar
        """Raises: an ensemble is never trained as one. ``trainer.train.train_members`` trains each member on
        its own (its seed, batch order and early stopping), which is what makes the members differ; a joint loss
        would train them on the same batches and stop them together."""
        raise NotImplementedError("an Ensemble is not trained as one: train each member (train_members)")

    def new_item_adapter(self) -> nn.Linear | None:
        """The members' new-item adapters side by side: [.., D] -> [.., K*H]."""
        adapters = [m.new_item_adapter() for m in self.models]
        if adapters[0] is None:
            return None
        adapter = nn.Linear(adapters[0].in_features, sum(a.out_features for a in adapters))
        with torch.no_grad():
            adapter.weight.copy_(torch.cat([a.weight for a in adapters]))  # [K*H, D]
            adapter.bias.copy_(torch.cat([a.bias for a in adapters]))  # [K*H]
        return adapter
