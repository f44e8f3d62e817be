"""Rich progress bars fed by the library's progress callbacks (the library itself never draws)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mdanet_sdk.cli._app import console, err_console

__all__ = ["case_bars"]


@contextmanager
def case_bars(quiet: bool) -> Iterator[Callable[[str, str, int], None]]:
    """Bars over cases and slices, driven by ``progress(event, case_id, n)`` of
    :func:`mdanet_sdk.segment` / :meth:`~mdanet_sdk.inference.Segmenter.predict_many`; ``("model", text, n)``
    prints ``text`` (unless ``quiet``) and adds ``n`` cases."""
    if quiet:
        yield lambda event, case_id, n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as bar:
        cases = bar.add_task("cases", total=0)
        slices = bar.add_task("slices", total=0)

        def update(event: str, case_id: str, n: int) -> None:
            if event == "model":
                for line in case_id.splitlines():  # one print per line: the console escapes control characters
                    console.print(line, highlight=False, markup=False)
                bar.update(cases, total=(bar.tasks[cases].total or 0) + n)
            elif event == "loaded":
                bar.update(slices, total=(bar.tasks[slices].total or 0) + n)
            elif event == "slices":
                bar.advance(slices, n)
            else:
                bar.advance(cases)

        yield update
