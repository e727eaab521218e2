"""Typer commands ``train``, ``evaluate``, ``popularity`` and ``add-items`` (mounted by ``recstream.cli``).

Logs go to stderr; ``evaluate --json`` writes exactly one JSON object to stdout.
"""

from __future__ import annotations

import logging
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError

from stream.settings import Settings
from trainer.config import TrainConfig
from trainer.data import DEFAULT_DATASET, MOVIELENS, TEST, VALID, Dataset, first_users, load_event_log, load_movielens
from trainer.publish import load_in_triton, model_folder, model_name, publish, versions
from trainer.version import METRIC_KEYS, cold_start_section, read_report, write_report

logger = logging.getLogger(__name__)

app = typer.Typer(help="Train, evaluate and extend the recstream model.", no_args_is_help=True)


class Split(StrEnum):
    test = "test"
    valid = "valid"


DatasetName = StrEnum("DatasetName", {name: name for name in MOVIELENS})
"""The named datasets of ``trainer.data.MOVIELENS``: ml-100k, ml-1m."""

Events = Annotated[
    Path | None, typer.Option(help="Event log (CSV/JSONL/Parquet) instead of a named --dataset.", show_default=False)
]
Items = Annotated[Path | None, typer.Option(help="Item table for --events (item_id, title, text fields).")]
LoadInTriton = Annotated[
    bool, typer.Option("--load", help="Ask the running Triton (--triton-url) to load the new version.")
]
DatasetOption = Annotated[
    DatasetName | None,
    typer.Option(
        "--dataset", help="A named dataset, fetched into the cache on first use (default ml-100k).", show_default=False
    ),
]


def _settings(ctx: typer.Context) -> Settings:
    """The recstream CLI's settings (global options such as --model-repository), or the environment's when
    this app runs on its own."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def load_data(events: Path | None, items: Path | None, dataset: str | None = None) -> Dataset:
    """``--events`` (with ``--items``), else the named ``--dataset`` (default ml-100k), fetched on first use."""
    if events and dataset:
        raise typer.BadParameter("give --events or --dataset, not both")
    if items and not events:
        raise typer.BadParameter("--items goes with --events (a named --dataset has its own item table)")
    return load_event_log(events, items) if events else load_movielens(dataset=dataset or DEFAULT_DATASET)


def train_config(pairs: list[str]) -> TrainConfig:
    """``["hidden=128", "use_text=false"]`` -> the ``TrainConfig`` with those values, each parsed as its field's
    type; an unknown key, a bad value or a bad combination is a ``BadParameter``, before any data is loaded."""
    names = list(TrainConfig.model_fields)
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in names:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
        values[key] = raw
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        errors = (f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter("; ".join(errors), param_hint="--set") from exc


def wait_for_file(path: Path, timeout_s: float, poll_s: float = 5.0) -> None:
    """Return once ``path`` exists (a companion run writes it when done); raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    if not path.is_file():
        logger.info("waiting up to %.0f s for %s (the companion run)", timeout_s, path)
    while not path.is_file():
        if time.monotonic() >= deadline:
            raise typer.BadParameter(f"{path} did not appear within {timeout_s:.0f} s (has the companion run failed?)")
        time.sleep(poll_s)


@app.command("train")
def train_command(
    ctx: typer.Context,
    dataset: DatasetOption = None,
    events: Events = None,
    items: Items = None,
    max_users: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Only the first N users (user-id order), every item still ranked: smoke runs of large datasets.",
            show_default=False,
        ),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override KEY=VALUE (trainer.config).")] = None,
    publish_version: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish a version.")] = True,
    report_path: Annotated[Path | None, typer.Option("--report", help="Also write report.json here.")] = None,
    faithfulness_users: Annotated[int, typer.Option(help="Test users for the attribution check.")] = 300,
    cold_report: Annotated[
        list[Path] | None,
        typer.Option(
            dir_okay=False,
            help="report.json of a run with items withheld (cold_share > 0); repeat it for several such runs "
            "(other seeds draw other items): their cold-start metrics, pooled, are attached, for a model "
            "trained on every item (cold_share=0). Read after training, so the companion runs may still be "
            "going when this one starts.",
        ),
    ] = None,
    cold_report_wait_s: Annotated[
        float,
        typer.Option(
            help="How long to wait for each --cold-report to appear once training is done. If one does not "
            "appear or is not a companion's report, the model is still written and published, without "
            "cold-start metrics, and the command exits with 1."
        ),
    ] = 3600.0,
    load: LoadInTriton = False,
) -> None:
    """Train on the train split, early-stop on validation, evaluate on test, publish the next version."""
    _setup_logging()
    from trainer.export import export_version
    from trainer.train import train_report

    cfg = train_config(set_ or [])
    name = dataset.value if dataset else None
    data = first_users(load_data(events, items, name), max_users)
    model, report = train_report(data, cfg, events, items, faithfulness_users, name, max_users)
    companions_failed: str | None = None
    if cold_report:
        try:
            for path in cold_report:
                wait_for_file(path, cold_report_wait_s)
            cold_start = cold_start_section([read_report(path) for path in cold_report])
            report = report.model_copy(update={"cold_start": cold_start})
        except (typer.BadParameter, ValueError) as exc:  # pydantic's ValidationError too: not a report.json
            companions_failed = str(exc)  # the trained model is kept all the same: hours of training
            logger.error("no cold-start metrics attached: %s", companions_failed)
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        write_report(report_path, report)
    if publish_version:
        settings = _settings(ctx)
        folder = model_folder(settings.model_repository, report.model)
        target = publish(folder, lambda out: export_version(model, data, report, out))
        typer.echo(f"published {target}", err=True)
        if load:
            load_in_triton(settings.triton_url, report.model)
    if companions_failed:
        typer.echo(f"error: --cold-report: {companions_failed} (the model was kept without them)", err=True)
        raise typer.Exit(code=1)


def version_dir(repository: Path, version: str, dataset: str | None = None) -> Path:
    """``latest`` or a version number of ``dataset``'s model (``trainer.publish.model_name``) -> its folder."""
    model_dir = repository / model_name(dataset)
    published = versions(model_dir)
    if version == "latest":
        if not published:
            raise typer.BadParameter(f"no published version in {model_dir}")
        version = str(published[-1])
    if not version.isdigit() or int(version) not in published:
        raise typer.BadParameter(f"version {version!r} is not published in {model_dir} (have {published})")
    return model_dir / str(int(version))


def evaluation_dataset(version_folder: Path, dataset: DatasetName | None) -> str:
    """``--dataset`` if given (it must be the version's own), else the version's dataset."""
    from trainer.evaluate import version_dataset

    own = version_dataset(version_folder)
    if dataset is None:
        if own is None:
            raise typer.BadParameter(f"{version_folder} was trained on an event log: give --events (and --items)")
        return own
    if own is not None and dataset.value != own:
        raise typer.BadParameter(f"{version_folder} was trained on {own}, not {dataset.value}", param_hint="--dataset")
    return dataset.value


@app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="Version number or 'latest'.")] = "latest",
    dataset: Annotated[
        DatasetName | None,
        typer.Option(
            "--dataset",
            help="A named dataset (default: the one the version was trained on, per its report.json).",
            show_default=False,
        ),
    ] = None,
    events: Events = None,
    items: Items = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object of metrics to stdout.")] = False,
    faithfulness_users: Annotated[int, typer.Option(help="Test users for the attribution check.")] = 0,
    split: Annotated[Split, typer.Option(help="Which held-out event of each user to predict.")] = Split.test,
) -> None:
    """Evaluate a published version's served artifacts (encoder.onnx, item embeddings) on the test split,
    or on the validation split with --split valid."""
    _setup_logging()
    from trainer.evaluate import evaluate_version, version_users

    folder = version_dir(_settings(ctx).model_repository, version, dataset.value if dataset else None)
    if events:
        data = load_data(events, items, dataset.value if dataset else None)  # with --dataset too: an error
    else:  # the version's own users: a --max-users smoke version is scored on the users it was trained on
        data = first_users(load_data(None, items, evaluation_dataset(folder, dataset)), version_users(folder))
    metrics = evaluate_version(
        folder,
        data,
        faithfulness_users,
        split=TEST if split is Split.test else VALID,
    )
    if as_json:
        sys.stdout.write(orjson.dumps(metrics, option=orjson.OPT_SERIALIZE_NUMPY).decode() + "\n")
        return
    for key in METRIC_KEYS:
        value = metrics.get(key)
        typer.echo(f"{key:>16}  {'n/a' if value is None else f'{value:.4f}'}")


@app.command("popularity")
def popularity_command(
    dataset: DatasetOption = None,
    events: Events = None,
    items: Items = None,
    max_users: Annotated[
        int | None, typer.Option(min=1, help="Only the first N users (user-id order).", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object of metrics to stdout.")] = False,
    split: Annotated[Split, typer.Option(help="Which held-out event of each user to predict.")] = Split.test,
) -> None:
    """Score the popularity baseline (train-event counts) on the test split, with the user's earlier items
    excluded and (``_all``) not: the same split, ranking and tie rule as every other comparison; no model."""
    _setup_logging()
    from trainer.evaluate import popularity_baseline

    data = first_users(load_data(events, items, dataset.value if dataset else None), max_users)
    metrics = popularity_baseline(data, TEST if split is Split.test else VALID)
    metrics |= {"dataset": None if events else (dataset.value if dataset else DEFAULT_DATASET), "split": split.value}
    if as_json:
        sys.stdout.write(orjson.dumps(metrics).decode() + "\n")
        return
    for key, value in metrics.items():
        typer.echo(f"{key:>16}  {f'{value:.4f}' if isinstance(value, float) else value}")


@app.command("add-items")
def add_items_command(
    items_path: Annotated[
        Path,
        typer.Argument(
            help="New items: CSV/JSONL/Parquet with item_id, title and text fields (embedded text = the fields "
            "after item_id joined, e.g. title then '(1995). Genres: Comedy.' as in training).",
        ),
    ],
    ctx: typer.Context,
    version: Annotated[str, typer.Option(help="Parent version number or 'latest'.")] = "latest",
    load: LoadInTriton = False,
) -> None:
    """Publish a new version with the items appended (text embedding only, the encoder is unchanged)."""
    _setup_logging()
    from trainer.catalog import add_items_from_file

    settings = _settings(ctx)
    target = add_items_from_file(version_dir(settings.model_repository, version), items_path)
    typer.echo(f"published {target}", err=True)
    if load:
        load_in_triton(settings.triton_url, target.parent.name)


if __name__ == "__main__":
    app()
