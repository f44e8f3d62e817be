"""The Typer application, and the decorator that registers a command and maps our errors to exit codes."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from mdanet_sdk._files import write_json
from mdanet_sdk._text import printable
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
    # nibabel prints its header repairs ("pixdim[1,2,3] should be non-zero ...") to stderr itself; the CLI says
    # in one line what is wrong with a file, so those lines would only contradict or repeat it.
    logging.getLogger("nibabel.global").setLevel(logging.CRITICAL + 1)


class SafeConsole(Console):
    """A rich console that escapes control characters in every string it renders (:func:`printable`): case
    ids and paths are file names, which can hold newlines and terminal escape sequences."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


def plain(text: str) -> Text:
    """``text`` as data for a table cell: never read as markup, control characters escaped."""
    return Text(printable(text))


console = SafeConsole()
err_console = SafeConsole(stderr=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, ``docker stop``, SLURM, Kubernetes), raised like Ctrl-C so that the same
    clean-up runs: temporary files are removed and a case's outputs are written all or none."""


#: Set when the main thread has run a SIGTERM or Ctrl-C handler: it is back in Python, cleaning up.
_HANDLED = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _HANDLED.set()
    raise Terminated()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _HANDLED.set()
    raise KeyboardInterrupt()


#: Seconds the main thread gets to act on SIGTERM or Ctrl-C before :func:`_watch_interrupts` ends the process.
STUCK_GRACE_S = 20.0
_WATCHING = False


def _watch_interrupts(grace: float) -> None:
    """End the process ``grace`` seconds after SIGTERM or Ctrl-C if the main thread has not acted on it.

    Python acts on a signal in the main thread between bytecodes only, so native code that never returns (a
    crafted TorchScript artefact's endless loop, a read that blocks) would hold the command forever. The signal
    module also writes each signal's number to a wakeup pipe at C level; a daemon thread reads it and, unless the
    handler has run in the main thread within the grace period (:data:`_HANDLED`: a clean-up that takes longer,
    such as worker processes finishing their cases, is left to finish), says so in one line and exits as SIGKILL
    would (the temporary files it leaves are removed by the next write of their targets, :mod:`mdanet_sdk._files`).
    A signal after a handled one ends the process once the grace has passed, whatever the clean-up does (it may
    itself be stuck in native code). Started once per process.
    """
    global _WATCHING
    if _WATCHING:
        return
    _WATCHING = True
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # A forked child (a DataLoader or pool worker) would write its own SIGTERM into this pipe: not ours.
    os.register_at_fork(after_in_child=_forget_wakeup_fd)

    def watch() -> None:
        handled = False
        while True:
            caught = [s for s in os.read(read_end, 64) if s in (signal.SIGTERM, signal.SIGINT)]
            if not caught:
                continue
            if not handled and _HANDLED.wait(grace):
                handled = True  # a clean-up runs; only another signal ends it early
                continue
            if handled:  # the user insists while that clean-up runs (it may itself be stuck in native code)
                time.sleep(grace)
            what = "SIGTERM" if caught[0] == signal.SIGTERM else "Ctrl-C"
            why = f"a second {what}" if handled else f"{what} (native code that does not return)"
            os.write(2, f"error: still running {grace:.0f} s after {why}; stopped without clean-up.\n".encode())
            os._exit(143 if caught[0] == signal.SIGTERM else 130)

    threading.Thread(target=watch, name="mdanet-interrupt-watch", daemon=True).start()


def _forget_wakeup_fd() -> None:
    with contextlib.suppress(ValueError):  # forked from a thread that is not the child's main thread
        signal.set_wakeup_fd(-1)


#: The help of every command's ``--json FILE``: the same meaning everywhere.
JSON_HELP = "Write the result as JSON to FILE ('-': print it)."


def emit_json(obj: Any, path: Path) -> None:
    """``--json FILE``: write ``obj`` to ``path`` atomically, or print it when ``path`` is ``-``.

    Raises:
        InputError: it is a folder, an image, an image's sidecar or a binary file
            (:func:`~mdanet_sdk.data.targets.check_report_file`).
        typer.Exit: code 1 after one error: line, when the file cannot be written (a missing parent, no
            permission).
    """
    if str(path) == "-":
        console.print_json(json.dumps(obj))
        return
    from mdanet_sdk.data.targets import check_report_file  # nibabel loads when a command needs it

    check_report_file(path)
    try:
        write_json(path, obj)
    except OSError as exc:  # a path that cannot be used: exit 1, as every command's path errors
        raise fail(
            f"cannot write {path} ({exc.strerror or type(exc).__name__}); choose a writable file name.", 1
        ) from None


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``app.command`` that turns an :class:`MDANetError` into one line on stderr and exit code 2, and an
    ``OSError`` (a path that cannot be used) into one line and exit code 1."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            try:
                return func(*a, **kw)
            except MDANetError as exc:
                raise fail(str(exc)) from None
            except OSError as exc:  # a path the user gave: missing, a folder, a file, read-only, disk full
                where = f"{exc.filename}: " if exc.filename else ""
                reason = exc.strerror or type(exc).__name__
                raise fail(f"{where}{reason}; check the path and its permissions, then run again.", 1) from None
            except KeyboardInterrupt as exc:  # the outputs being written were removed on the way here
                terminated = isinstance(exc, Terminated)
                what = "terminated (SIGTERM)" if terminated else "interrupted"
                raise fail(f"{what}; outputs not yet complete were removed.", 143 if terminated else 130) from None

        app.command(*args, **kwargs)(wrapper)
        return func

    return decorate


def main() -> None:
    """Console-script entry point (SIGTERM is handled like Ctrl-C). A usage error (an unknown option, a value out
    of its range) is one ``error:`` line too, not click's usage text and box."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)
    _watch_interrupts(STUCK_GRACE_S)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C while the parser ran: nothing was written yet
        raise SystemExit(_exit_with("interrupted.", 130)) from None
    except Exception as exc:  # click's usage errors, which typer (vendoring click) does not name publicly
        code = getattr(exc, "exit_code", None)
        if not (hasattr(exc, "format_message") and isinstance(code, int)):
            raise
        message, context = exc.format_message().rstrip("."), getattr(exc, "ctx", None)
        if not message:  # no command given: the help was printed
            raise SystemExit(code) from None
        where = f"; see '{context.command_path} --help'" if context is not None else ""
        raise SystemExit(_exit_with(f"{message}{where}.", code)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _exit_with(message: str, code: int) -> int:
    fail(message, code)
    return code
