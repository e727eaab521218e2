"""The one configuration object of the running system (flags and ``RECSTREAM_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.schemas import EventType

#: The project's own model repository, wherever the project is installed from source (editable installs).
PROJECT_MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
#: Where settings are read from besides the environment (pydantic-settings' dotenv support).
ENV_FILE = ".env"


class Settings(BaseSettings):
    """Everything the broker, Triton launcher, worker and trainer need; built once and passed in through
    constructors. Sources, strongest first: command-line flags, ``RECSTREAM_*`` environment variables, a
    ``.env`` file in the current directory, the defaults below."""

    model_config = SettingsConfigDict(
        env_prefix="RECSTREAM_", env_file=ENV_FILE, env_file_encoding="utf-8", frozen=True, extra="ignore"
    )

    # --- Kafka ---
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,...]")
    broker_port: int = Field(9092, description="port of the embedded broker (recstream up, recstream broker)")
    partitions: int = Field(4, ge=1, description="partition count of every topic the stack creates")
    topic_views: str = Field("views", description="input: view events (JSON, keyed by user_id)")
    topic_clicks: str = Field("clicks", description="input: click, add_to_cart and purchase events")
    topic_events: str = Field("recstream-events", description="internal: validated events keyed by user_id")
    topic_predictions: str = Field("predictions", description="output: next items and actions, per event")
    topic_guidance: str = Field("guidance", description="output: what to do for a user, and why")
    topic_dead_letters: str = Field(
        "dead-letters", description="output: bad input and rejected windows, with the reason"
    )
    topic_control: str = Field(
        "recstream-control", description="requests to the workers, keyed by user_id (e.g. forget a user)"
    )
    app_id: str = Field(
        "recstream", description="Faust app id: the consumer group and the prefix of the changelog topics"
    )
    embedded_broker: Literal["noida", "tansu"] = Field(
        "noida", description="the broker `recstream up` and `recstream broker` start (docs/BENCHMARKS.md compares them)"
    )
    consumer_fetch_max_wait_ms: int = Field(
        100, ge=1, description="longest a fetch waits for data (tansu makes every fetch wait this long)"
    )
    consumer_empty_fetch_pause_ms: float = Field(
        10.0,
        ge=0,
        description="after an empty fetch answered at once (noida-db does not hold fetches), wait out this long",
    )
    producer_linger_ms: float = Field(0.0, ge=0, description="how long the worker's producer waits to fill a batch")

    # --- Triton ---
    triton_url: str = Field("127.0.0.1:8001", description="gRPC host:port")
    triton_http_port: int = Field(8000, description="HTTP port of the embedded Triton")
    triton_grpc_port: int = Field(8001, description="gRPC port of the embedded Triton")
    triton_metrics_port: int = Field(8002, description="Prometheus metrics port of the embedded Triton")
    model_name: str = Field("recstream", description="the Triton model the worker scores with")
    model_repository: Path = Field(
        PROJECT_MODEL_REPOSITORY, description="Triton model repository (the model is its <model_name> folder)"
    )
    triton_timeout_s: float = Field(10.0, gt=0, description="time-out of one Triton request")

    # --- worker ---
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once needs broker transactions (Apache Kafka; noida-db has them, tansu not)",
    )
    recovery_consistency_check: bool = Field(
        True, description="check a restarted worker's table offsets against the broker (tansu must turn it off)"
    )
    session_timeout_s: float = Field(
        8.0,
        gt=0,
        description="a worker that stops heartbeating loses its partitions after this long, on brokers that expire "
        "sessions (noida-db does not: docs/RELIABILITY.md)",
    )
    leave_group_on_stop: bool = Field(
        True,
        description="a clean stop leaves the consumer group, so the other workers take its partitions at once "
        "(off: a static member is only expired after session_timeout_s, and a restart within it needs no rebalance)",
    )
    rebalance_timeout_s: float = Field(
        10.0,
        gt=0,
        description="how long a rebalance waits for every member to rejoin: after kill -9 and a restart, the dead "
        "member holds up the group this long at most",
    )
    group_instance_id: str | None = Field(
        None,
        description="static group membership: a worker restarted with the same id gets its partitions back at once, "
        "without a rebalance (default: host name and data_dir, stable across restarts, distinct per worker)",
    )
    log_hash_key: SecretStr = Field(
        SecretStr(""),
        description="key of the hash that stands for a user id in logs (empty: a new random key per process)",
    )
    web_host: str = Field("127.0.0.1", description="address the worker's web server binds (0.0.0.0: every one)")
    web_port: int = Field(6066, description="port of the worker's web server (/, /health, /metrics)")
    data_dir: Path = Field(Path("var/worker"), description="RocksDB table state of the worker")
    workers: int = Field(
        1,
        ge=1,
        description="worker processes `recstream up` and `recstream bench` run, one consumer group sharing the "
        "partitions (at most `partitions` do work); worker i > 0 uses web_port + i and data_dir + '-i'",
    )

    # --- behaviour window ---
    window_max_events: int = Field(
        50,
        ge=1,
        description="events kept in a user's behaviour window (`recstream up`, unless set: the history length "
        "its model's newest version was trained on)",
    )
    window_max_age_s: float = Field(30 * 24 * 3600, gt=0, description="age in event time, from the newest event")

    consumed_event_types: tuple[EventType, ...] = Field(
        tuple(EventType), description="event types whose item counts as consumed: never recommended again"
    )
    consumed_max_items: int = Field(
        200, ge=0, description="consumed items kept per user beyond the window (newest first); 0: the window only"
    )

    # --- batching ---
    max_batch_size: int = Field(64, ge=1, description="users per Triton request, at most")
    max_wait_ms: float = Field(
        5.0,
        ge=0,
        description="longest the first user of a batch waits for others while another batch is scored "
        "(an idle scorer gets the batch at once)",
    )
    max_batches_in_flight: int = Field(
        1,
        ge=1,
        description="batches scored at once; the next one fills while Triton scores the current one (on a CPU "
        "shared with Triton, 1 makes fewer, larger requests: docs/BENCHMARKS.md)",
    )

    # --- outputs ---
    top_k: int = Field(10, ge=1, description="items per prediction")

    # --- guidance policy ---
    guidance_cooldown_s: float = Field(300.0, ge=0, description="at most one guidance per user per this time")
    guidance_max_delay_s: float = Field(
        30.0,
        gt=0,
        description="a user still waiting for an explanation this long after the prediction is not guided: under "
        "a backlog the policy sheds stale guidance instead of falling behind",
    )
    guidance_max_pending_users: int = Field(
        1024, ge=1, description="users waiting for an explanation, at most; a prediction beyond that is not guided"
    )
    checkout_min_purchase_prob: float = Field(
        0.3, ge=0, le=1, description="p(purchase) that suggests checking out an open cart"
    )
    retain_max_engage_prob: float = Field(
        0.35, ge=0, le=1, description="engagement below which the policy tries to retain the user"
    )
    recommend_min_score: float = Field(
        0.005, ge=0, le=1, description="top item probability (softmax over the catalogue) that makes a recommendation"
    )

    @model_validator(mode="after")
    def _every_worker_gets_a_partition(self) -> Settings:
        if self.workers > self.partitions:
            raise ValueError(
                f"workers ({self.workers}) > partitions ({self.partitions}): a worker without a partition never "
                "becomes healthy; run at most as many workers as partitions"
            )
        return self
