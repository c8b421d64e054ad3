"""Progress and logs: a rich progress bar on stderr behind a tiny callback, and the `Log` callable type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
Log = Callable[[str], None]  # where long work reports what it is doing (console.print, print, a list's append)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `update(done, total)`."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def bar(progress: Callable[[str], Any] | None, description: str) -> Any:
    """`progress(description)` (a context manager yielding `update(done, total)`), or one yielding None when
    there is no progress display."""
    return progress(description) if progress else contextlib.nullcontext(None)
