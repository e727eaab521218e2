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
from trainer.cli import app as trainer_app

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
    replay: Annotated[bool, typer.Option(help="replay MovieLens-100K into the input topics")] = True,
    rate: Annotated[float, typer.Option(help="replay rate, events per second")] = 50.0,
    limit: Annotated[int | None, typer.Option(help="replay at most this many events")] = None,
    duration_s: Annotated[float | None, typer.Option(help="stop by itself after this many seconds")] = None,
) -> None:
    """Start broker, Triton and the worker; replay MovieLens and show predictions and guidance (Ctrl-C stops)."""
    from recstream.stack import run_stack

    _run(ctx, lambda s: run_stack(s, replay=replay, rate=rate, limit=limit, duration_s=duration_s))


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


@replay_app.command("movielens")
def replay_movielens(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="events per second; 0 = as fast as possible")] = 50.0,
    limit: Annotated[int | None, typer.Option(help="at most this many events")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="where the dataset is cached")] = None,
) -> None:
    """Replay MovieLens-100K ratings as view/click events (rating 4-5 = click), in time order."""
    from recstream.replay import replay_movielens as replay

    _run(ctx, lambda s: asyncio.run(replay(s, rate=rate, limit=limit, cache_dir=cache_dir)))
