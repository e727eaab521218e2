"""Model and training settings: one typed, documented place for every default."""

from __future__ import annotations

import logging
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

Count = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(ge=0, lt=1)]
NonNegative = Annotated[float, Field(ge=0)]
DECODERS = frozenset({"SmolLM2-135M-Instruct"})  # text models read as hidden states, with no top to fine-tune


class TrainConfig(BaseModel):
    """Every setting of a training run, checked when built (before any data is loaded): sizes positive, shares
    in [0, 1) (``id_dropout`` may be 1: every id zeroed, text only), ``heads`` dividing ``hidden``. Unknown keys
    are refused; the attribute docstrings are the field descriptions (``TrainConfig.model_fields[k].description``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    # model
    hidden: Count = 64
    """H: item vectors, transformer width and user vector (the ONNX tensors' last dimension)."""
    layers: Count = 2
    """GPT-2 blocks in the sequence encoder."""
    heads: Count = 2
    """attention heads per block."""
    dropout: Share = 0.2
    """dropout in the encoder (embeddings, attention, residuals)."""
    max_len: Count = 50
    """events per window: training windows and the evaluation history are truncated to this."""
    use_text: bool = True
    """add the projected ``text_model`` embedding of the item text to each item vector (False: id embeddings
    only)."""
    text_model: Literal["all-MiniLM-L6-v2", "all-mpnet-base-v2", "SmolLM2-135M-Instruct"] = "all-MiniLM-L6-v2"
    """the frozen encoder of the item texts (``trainer.text.TEXT_MODELS``): the sentence encoders
    all-MiniLM-L6-v2 (384-d) or all-mpnet-base-v2 (768-d, ~420 MB fetched into the cache on first use), or the
    decoder LLM SmolLM2-135M-Instruct (576-d mean-pooled hidden states, a 98 MB GGUF file fetched on first use);
    a linear adapter maps its vectors to H and is trained with the recommender."""
    text_lora_rank: Annotated[int, Field(ge=0)] = 0
    """if > 0, fine-tune the text model with the recommender (``trainer.text.TunedTextTop``): a LoRA update of
    this rank of its last feed-forward block's output projection (its down-projection within the 64 principal
    directions of the block's activations), and that block's LayerNorm, are trained with the recommender's loss,
    and every item text is re-embedded through them at every step (the layers below stay frozen and run once per
    member). Needs ``use_text``, a sentence encoder (not the decoder SmolLM2) and
    ``members=1`` (``add-items`` embeds new items through the one tuned block). 0: the text model stays frozen."""
    use_gaps: bool = True
    """add a learned vector of each event's bucketed gap to the window's previous event (``modeling.gap_buckets``)
    to its position (False: the encoder reads no time at all, an ablation; encoder.onnx keeps ``age_s``)."""
    use_time: bool = False
    """add a learned vector of each event's UTC hour of the day and day of the week (``hour``, ``weekday``: the
    served model derives them from TIMESTAMPS) to its position (False: only the gaps between events)."""
    time_inputs: Literal["both", "hour", "weekday"] = "both"
    """which of ``use_time``'s two clock fields the encoder reads, to measure each apart: the other is set to
    padding (a zero vector) and stays an input of ``encoder.onnx``, so the served model feeds it as before."""
    use_context: bool = False
    """add a learned vector of each context value an event carries (its ``context``: for MovieLens the user's
    age group, gender, occupation and zip region; the vocabulary is the version's ``context.json``) to its
    position; values the version does not know add nothing (False: context is not read)."""
    id_dropout: Annotated[float, Field(ge=0, le=1)] = 0.3
    """in training, the share of items whose id embedding is zeroed per batch, so text alone scores well."""
    text_map_ridge: Annotated[float, Field(gt=0)] | None = None
    """if set, fit after training a ridge regression (this penalty) from the text vectors of the items with an id
    embedding to those embeddings (both centred), and add its prediction, times ``text_map_scale``, to the rows of
    items without one: items never seen in training and those ``add-items`` appends (the map is folded into the
    version's text adapter, so the served contract is unchanged). Rows of items with an id embedding do not
    change. None: an item without an id embedding gets the learned unknown-id vector only."""
    text_map_scale: Annotated[float, Field(gt=0, le=1)] = 1.0
    """the share of the ``text_map_ridge`` prediction that is added (0.5: half way from the unknown-id vector)."""
    action_weight: NonNegative = 0.1
    """weight of the next-event-type loss next to the next-item loss."""
    members: Count = 3
    """models trained with seeds ``seed .. seed+members-1`` and served as one ensemble (mean of their logits)."""
    # training
    epochs: Count = 40
    """upper bound on epochs; early stopping usually ends training first."""
    patience: Count = 10
    """stop after this many epochs without a better validation NDCG@10."""
    max_train_min: NonNegative = 0.0
    """if > 0, stop a member after the first epoch that ends this many minutes or more after its training began
    (the best validated weights so far are kept): sizes a run to a session, e.g. full MovieLens-1M on 2 CPU
    cores; 0 = no limit."""
    batch_size: Count = 16
    """training windows per step (each window holds up to ``max_len`` targets)."""
    lr: Annotated[float, Field(gt=0)] = 2e-3
    """Adam learning rate."""
    weight_decay: NonNegative = 0.0
    """Adam (decoupled, AdamW) weight decay."""
    ema_decay: Share = 0.999
    """if > 0, validate and keep an exponential moving average of the weights (per step) instead of the raw
    weights: it smooths the step-to-step noise that makes single checkpoints' validation scores jump."""
    window_stride: Count = 5
    """step between the starts of consecutive training windows over a long train sequence."""
    shuffle_ties: bool = False
    """in every epoch, put each user's train events that share a timestamp in a new random order (MovieLens stores
    ratings per second: 76 % of ML-100K's and 77 % of ML-1M's events share their second with another event of the
    same user). A training augmentation only: the split, the validation and test inputs and targets follow the
    order rule of ``trainer.data`` (timestamp, then item id). Off by default since that rule: it gained 12-15 % on
    validation when ties kept their file order, and under the rule a single member without it scores test NDCG@10
    0.0739 against 0.0630 with it (docs/BENCHMARKS.md, "Version 5"); versions 4 and 5 were trained with it on."""
    cold_share: Share = 0.0
    """share of items withheld from training (their train events removed) to measure cold start; the
    published model uses 0 (every item), a companion run with 0.2 measures cold start (``--cold-report``): ~170
    of the 943 test targets are then withheld items, enough to tell a cold-start hit rate from chance."""
    seed: Annotated[int, Field(ge=0)] = 2020
    """seeds the cold-item draw, the parameter init and the batch order."""
    threads: Count = 2
    """torch intra-op threads."""

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> Self:
        if self.hidden % self.heads:
            raise ValueError(
                f"hidden={self.hidden} is not divisible by heads={self.heads}: each head gets hidden/heads"
            )
        return self

    @model_validator(mode="after")
    def _time_inputs_need_use_time(self) -> Self:
        if self.time_inputs != "both" and not self.use_time:
            raise ValueError(f"time_inputs={self.time_inputs} picks a clock field: it needs use_time, not False")
        return self

    @model_validator(mode="after")
    def _text_map_needs_text(self) -> Self:
        if self.text_map_ridge is None and self.text_map_scale != 1.0:
            raise ValueError(f"text_map_scale={self.text_map_scale} scales the text map: it needs text_map_ridge")
        if self.text_map_ridge is not None and not self.use_text:
            raise ValueError(f"text_map_ridge={self.text_map_ridge} maps the item texts: it needs use_text")
        return self

    @model_validator(mode="after")
    def _tuned_text_needs_one_sentence_encoder(self) -> Self:
        if not self.text_lora_rank:
            return self
        if not self.use_text:
            raise ValueError(f"text_lora_rank={self.text_lora_rank} fine-tunes the text model: it needs use_text")
        if self.text_model in DECODERS:
            raise ValueError(f"text_lora_rank={self.text_lora_rank} tunes a sentence encoder, not {self.text_model}")
        if self.members > 1:
            raise ValueError(
                f"text_lora_rank={self.text_lora_rank} tunes one text model: it needs members=1, not {self.members}"
            )
        return self
