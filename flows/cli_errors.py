"""Turning expected errors into one clear CLI line instead of a traceback."""

from __future__ import annotations

import errno
import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Exception types whose message is already a complete, user-facing sentence. FloatingPointError:
#: training stopped on a non-finite loss (the message says which losses and what to change).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    ValueError,
    PermissionError,
    OSError,
    FloatingPointError,
)


_OS_FIXES = {
    errno.ENOSPC: "; free space on that disk and run the same command again (finished work is kept)",
    errno.EDQUOT: "; free space within your quota and run the same command again (finished work is kept)",
    errno.EACCES: "; fix its permissions and run the same command again",
    errno.EPERM: "; fix its permissions and run the same command again",
    errno.EROFS: "; the file system is read-only: use a writable --run-dir",
}


def one_line(exc: BaseException) -> str:
    """The error as one line: its message (an OSError's with the file it names), never empty."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        fix = _OS_FIXES.get(exc.errno or 0, "")
        return f"{exc.strerror}: {exc.filename}{fix}"
    text = " ".join(str(exc).split()) if str(exc) else ""
    return text or type(exc).__name__


def clean_errors(func: F) -> F:
    """Decorator: expected errors become ``Error: <message>`` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except EXPECTED_ERRORS as exc:
            raise click.ClickException(one_line(exc)) from None

    return wrapper  # type: ignore[return-value]


def concise_warnings() -> None:
    """joindet's random-backbone warning (``detector.model.RandomBackboneWarning``) once per
    process, as one ``warning: ...`` line on stderr without Python's source-line echo; every
    other warning is shown as Python shows it. Matched by name: importing the detector would
    load torch before any command needs it. Once by the text already printed, not only by the
    filter: libraries that change the warning filters during a run (``catch_warnings``) reset
    Python's record of what it has shown."""
    warnings.filterwarnings("once", message="DetectorConfig.backbone_weights is not set")
    shown = warnings.showwarning
    printed: set[str] = set()

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None):
        if category.__name__ == "RandomBackboneWarning":
            if str(message) not in printed:
                printed.add(str(message))
                click.echo(f"warning: {message}", err=True)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
