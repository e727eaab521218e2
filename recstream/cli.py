"""The ``recstream`` command line: run the embedded stack or one of its parts, replay data, train models.

Every field of :class:`stream.settings.Settings` is a global option (``recstream --web-port 6067 worker``)
and an environment variable (``RECSTREAM_WEB_PORT=6067``); flags win over the environment.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from recstream.errors import StackError
from stream.settings import Settings
from trainer.cli import DatasetName
from trainer.cli import app as trainer_app
from trainer.data import DEFAULT_DATASET, MOVIELENS
from trainer.publish import MODEL_NAME, model_name, versions

logger = logging.getLogger(__name__)

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
replay_app = typer.Typer(help="Stream a dataset's events, in time order, into the input topics.")
app.add_typer(replay_app, name="replay")
app.add_typer(trainer_app)  # train, evaluate, add-items (torch is imported only when they run)


def _settings_options(func: Any) -> Any:
    """Give ``func`` one optional flag per Settings field, so the flags never drift from the settings."""
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for name, field in Settings.model_fields.items():
        option = typer.Option(None, help=field.description or name.replace("_", " "), show_default=False)
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=field.annotation | None)
        )
    func.__signature__ = inspect.Signature(params)
    return func


@app.callback()
@_settings_options
def main(ctx: typer.Context, **overrides: Any) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)],
    )
    ctx.meta["flags"] = overrides
    ctx.obj = Settings(**{k: v for k, v in overrides.items() if v is not None})


def _run(ctx: typer.Context, body: Any) -> None:
    """Run one command; a StackError becomes one clear line on stderr and exit code 1."""
    try:
        body(ctx.obj)
    except StackError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        logger.info("interrupted")


@app.command()
def up(
    ctx: typer.Context,
    replay: Annotated[bool, typer.Option(help="replay --dataset into the input topics")] = True,
    dataset: Annotated[
        DatasetName,
        typer.Option(
            help="the dataset to replay, served by its own model (ml-1m: recstream-ml-1m, trained with "
            "`recstream train --dataset ml-1m`; its item ids differ)"
        ),
    ] = DatasetName[DEFAULT_DATASET],
    rate: Annotated[float, typer.Option(help="replay rate, events per second")] = 50.0,
    limit: Annotated[int | None, typer.Option(help="replay at most this many events")] = None,
    duration_s: Annotated[float | None, typer.Option(help="stop by itself after this many seconds")] = None,
) -> None:
    """Start broker, Triton and the worker; replay MovieLens and show predictions and guidance (Ctrl-C stops)."""
    from recstream.stack import run_stack

    def body(settings: Settings) -> None:
        name = dataset.value
        run_stack(serving(settings, name), replay=replay, rate=rate, limit=limit, duration_s=duration_s, dataset=name)

    _run(ctx, body)


def serving(settings: Settings, dataset: str) -> Settings:
    """The settings that serve ``dataset``'s own model (``trainer.publish.model_name``) unless ``--model-name``
    chose another, with the window its newest version reads (:func:`recstream.stack.version_window`); a
    StackError when that model has no published version."""
    if settings.model_name == MODEL_NAME:
        settings = settings.model_copy(update={"model_name": model_name(dataset)})
    folder = settings.model_repository / settings.model_name
    published = versions(folder)
    if not published:
        raise StackError(
            f"no version of model {settings.model_name!r} in {folder}: train one with "
            f"`recstream train --dataset {dataset}`"
        )
    from recstream.stack import version_window

    return version_window(settings, folder / str(published[-1]))


@app.command()
def broker(ctx: typer.Context) -> None:
    """Run only the embedded Kafka-protocol broker (tansu) and create the stack's topics."""
    from recstream.stack import run_broker

    _run(ctx, run_broker)


@app.command()
def triton(ctx: typer.Context) -> None:
    """Run only the Triton Inference Server on the model repository."""
    from recstream.stack import run_triton

    _run(ctx, run_triton)


@app.command()
def worker(ctx: typer.Context) -> None:
    """Run one Faust worker against the configured broker and Triton (several may share a broker)."""
    from recstream.stack import run_worker

    _run(ctx, run_worker)


@app.command()
def watch(ctx: typer.Context) -> None:
    """Show predictions, guidance and dead letters as they arrive."""
    from recstream.watch import watch_outputs

    _run(ctx, lambda s: asyncio.run(watch_outputs(s)))


@app.command()
def forget(
    ctx: typer.Context,
    users: Annotated[list[str], typer.Argument(help="user ids", show_default=False)],
) -> None:
    """Delete users' windows and guidance state in every worker (through the control topic)."""
    from recstream.control import forget_users

    _run(ctx, lambda s: asyncio.run(forget_users(s, users)))


def _replay_command(dataset: str) -> Any:
    """``recstream replay <dataset>``: one command per named dataset, all with the same options."""

    def replay_dataset(
        ctx: typer.Context,
        rate: Annotated[float, typer.Option(help="events per second; 0 = as fast as possible")] = 50.0,
        limit: Annotated[int | None, typer.Option(help="at most this many events")] = None,
        cache_dir: Annotated[
            Path | None, typer.Option(help="folder of the dataset's files (default <cache>/<dataset>)")
        ] = None,
    ) -> None:
        from recstream.replay import replay_movielens as replay

        _run(
            ctx,
            lambda s: asyncio.run(
                replay(s, rate=rate, limit=limit, cache_dir=cache_dir, dataset=dataset, progress=True)
            ),
        )

    return replay_dataset


for _name, _source in MOVIELENS.items():
    replay_app.command(
        _name,
        help=f"Replay {_source.label} ratings as view/click events (rating 4-5 = click), in time order "
        "(timestamp, user, item id); fetched into the cache on first use.",
    )(_replay_command(_name))
replay_app.command("movielens", help="The same as `recstream replay ml-100k` (MovieLens-100K).")(
    _replay_command(DEFAULT_DATASET)
)


@app.command()
def config(
    ctx: typer.Context,
    markdown: Annotated[bool, typer.Option(help="print README's table of every setting and its default")] = False,
) -> None:
    """Show the effective settings and where each came from (flag, environment, .env or default)."""
    from rich.table import Table

    from recstream.status import effective_settings, settings_markdown

    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return

    table = Table("setting", "value", "from", "what", box=None, pad_edge=False)
    for row in effective_settings(ctx.obj, ctx.meta["flags"]):
        table.add_row(row.name, row.value, row.source, row.description)
    Console().print(table)


@app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the broker, Triton and the worker are up, the worker's lag and the model version it serves."""
    from recstream.status import stack_status

    parts = asyncio.run(stack_status(ctx.obj))
    console = Console()
    for part in parts:
        mark = "[green]ok[/]  " if part.ok else "[red]down[/]"
        console.print(f"{mark} {part.part:<7} {part.detail}", highlight=False)
    if not all(part.ok for part in parts):
        raise typer.Exit(1)


@app.command()
def bench(
    ctx: typer.Context,
    users: Annotated[
        int | None, typer.Option(help="fresh users per end-to-end phase (default 400, --quick 50)")
    ] = None,
    events_per_user: Annotated[int | None, typer.Option(help="events of each user (default 5, --quick 3)")] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            help="steady rates, fractions of the saturated rate, comma-separated (default 0.25,0.5,0.75; --quick 0.5)"
        ),
    ] = None,
    min_predictions: Annotated[
        int | None, typer.Option(help="predictions each steady phase yields at least (default 1000, --quick 100)")
    ] = None,
    out: Annotated[Path, typer.Option(help="where report.json, report.md and latency.png go")] = Path("var/bench"),
    quick: Annotated[bool, typer.Option(help="a small run of every part (about a minute; tests)")] = False,
    guidance: Annotated[
        bool, typer.Option(help="let the worker's policy guide users (--no-guidance: the prediction path alone)")
    ] = True,
) -> None:
    """Benchmark the model in-process, Triton, the whole pipeline and a naive baseline on a stack of its own."""
    from recstream.bench import BenchOptions, markdown, run_bench

    try:
        fractions = [float(r) for r in rates.split(",")] if rates else None
    except ValueError:
        raise typer.BadParameter(f"{rates!r}: expected fractions like 0.25,0.5,0.75", param_hint="--rates") from None
    options = BenchOptions.create(
        quick=quick,
        users=users,
        events_per_user=events_per_user,
        rates=fractions,
        min_predictions=min_predictions,
        out=out,
        guidance=guidance,
    )
    _run(
        ctx,
        lambda s: Console(soft_wrap=True).print(
            markdown(run_bench(s, options)), markup=False, highlight=False, emoji=False
        ),
    )
