"""User-facing errors: bad input that the CLI reports in one line with exit code 2.

A message reads ``FILE[:LINE]: KEY: what is wrong (what to do)``: where the bad input is (a file and
line, a ``--flag``, or a ``--set`` override), the key, and the way out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130


class AlignError(Exception):
    """Bad input (a config key, a data row, a path): the message names where it is."""

    exit_code = USER_ERROR_EXIT_CODE


class Interrupted(AlignError):
    """Ctrl-C: the message says where the run stopped and how to resume it."""

    exit_code = INTERRUPTED_EXIT_CODE


def one_line(message: str) -> str:
    """A message on one line (what the CLI prints after ``error:``)."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def error_message(err: Any) -> str:
    """One pydantic error's message, without the "Value error, " pydantic puts before a validator's."""
    return err["msg"].removeprefix("Value error, ")


def validation_message(e: ValidationError) -> str:
    """A pydantic error as ``field: message; field: message`` (no URLs, no input dumps)."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {error_message(err)}" if loc else error_message(err))
    return "; ".join(parts)
