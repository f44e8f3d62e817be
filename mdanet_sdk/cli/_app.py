"""The Typer application, and the decorator that registers a command and maps our errors to exit codes."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from mdanet_sdk.errors import MDANetError

app = typer.Typer(
    name="mdanet-sdk",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """MDANet brain-stroke lesion segmentation: train, segment, evaluate, export, benchmark."""


console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` that turns an :class:`MDANetError` into one line on stderr and exit code 2."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return func(*a, **kw)
            except MDANetError as exc:
                raise fail(str(exc)) from None

        app.command(*args, **kwargs)(wrapper)
        return func

    return decorate


def main() -> None:
    """Console-script entry point."""
    app()
