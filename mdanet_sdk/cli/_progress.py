"""Rich progress bars fed by the library's progress callbacks (the library itself never draws)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mdanet_sdk.cli._app import console, err_console
from mdanet_sdk.train.events import SPLIT_LABELS

if TYPE_CHECKING:
    from mdanet_sdk.train.events import EpochStats, TrainEvent

__all__ = ["case_bars", "train_bars"]


@contextmanager
def case_bars(quiet: bool) -> Iterator[Callable[[str, str, int], None]]:
    """Progress of :func:`mdanet_sdk.segment`, driven by its ``progress(event, case_id, n)`` events.

    ``("model", text, n)`` and ``("note", text, 0)`` print ``text`` on stdout (unless ``quiet``). On a terminal,
    bars over cases and slices follow the other events; elsewhere (a pipe, CI, a SLURM log) one plain line per
    finished case goes to stderr instead, e.g. ``[3/40] sub-0003 done in 2.1 s``, since live bars there
    become walls of control characters.
    """
    if quiet:
        yield lambda event, case_id, n: None
        return
    if not err_console.is_terminal or err_console.is_dumb_terminal:
        yield _case_lines()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        cases = bar.add_task("cases", total=0)
        slices = bar.add_task("slices", total=0)

        def update(event: str, case_id: str, n: int) -> None:
            if event in ("model", "note"):
                _print_lines(case_id)
            elif event == "cases":
                bar.update(cases, total=n)
            elif event == "loaded":
                bar.update(slices, total=(bar.tasks[slices].total or 0) + n)
            elif event == "slices":
                bar.advance(slices, n)
            elif event in _FINISHED:
                bar.advance(cases)

        yield update


#: The events that end a case, and how a plain line tells each (``n``: the case's runtime in ms when done).
_FINISHED = {
    "done": lambda n: f"done in {n / 1000:.1f} s",
    "failed": lambda n: "failed",
    "skipped": lambda n: "skipped (outputs complete)",
}


def _print_lines(text: str) -> None:
    for line in text.splitlines():  # one print per line: the console escapes control characters
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # unbroken, for logs and grep


def _case_lines() -> Callable[[str, str, int], None]:
    """The progress callback of a non-interactive terminal: a plain line per finished case."""
    total = 0
    finished = 0

    def update(event: str, case_id: str, n: int) -> None:
        nonlocal total, finished
        if event in ("model", "note"):
            _print_lines(case_id)
        elif event == "cases":
            total = n
        elif event in _FINISHED:
            finished += 1
            err_console.print(
                f"[{finished}/{total}] {case_id} {_FINISHED[event](n)}", highlight=False, markup=False, soft_wrap=True
            )

    return update


def _stats_text(stats: EpochStats) -> str:
    return f"loss {stats.loss:.4f}  dice {stats.train_dsc:.3f}"


@contextmanager
def train_bars(quiet: bool, patience: int) -> Iterator[Callable[[TrainEvent], None] | None]:
    """One bar per epoch on stdout (kept after it ends), driven by the ``progress`` callback of
    :func:`mdanet_sdk.train.trainer.train`: steps with the running loss and train Dice, then the Dice of the
    split the event names (``inner DSC`` or ``val DSC``); a line when early stopping (``patience`` epochs
    without a better Dice on that split) ends a fold. Yields ``None`` when ``quiet`` (no callback: the trainer
    then skips its per-step statistics)."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = None

        def update(event: TrainEvent) -> None:
            nonlocal task
            if event.what == "epoch":
                task = bar.add_task(
                    f"fold {event.fold} epoch {event.epoch + 1}/{event.epochs}", total=event.steps, stats=""
                )
            elif event.what == "step" and task is not None and event.stats is not None:
                bar.update(task, advance=1, stats=_stats_text(event.stats))
            elif event.what == "validated" and task is not None and event.stats is not None:
                best = event.best_epoch if event.best_epoch is not None else event.epoch
                bar.update(
                    task,
                    stats=f"{_stats_text(event.stats)}  {SPLIT_LABELS[event.split][0]} {event.val_dsc:.3f} "
                    f"(best {event.best_val_dsc:.3f} @ {best + 1})",
                )
            elif event.what == "stopped":
                console.print(
                    f"fold {event.fold}: no better {SPLIT_LABELS[event.split][1]} for {patience} epochs, stopping.",
                    highlight=False,
                )

        yield update
