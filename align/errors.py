"""User-facing errors: bad input that the CLI reports in one line with exit code 2."""

from __future__ import annotations

USER_ERROR_EXIT_CODE = 2


class AlignError(Exception):
    """Bad input (a config key, a data row, a path): the message names where it is."""

    exit_code = USER_ERROR_EXIT_CODE
