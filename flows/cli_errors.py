"""Turning expected errors into one clear CLI line instead of a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Exception types whose message is already a complete, user-facing sentence.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, PermissionError, OSError)


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
            raise click.ClickException(str(exc) or type(exc).__name__) from None

    return wrapper  # type: ignore[return-value]
