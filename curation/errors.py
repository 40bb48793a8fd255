"""Errors that the CLI turns into one line on stderr and a non-zero exit."""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: a missing file, a malformed line, a wrong option.

    The message names the file, line or column at fault and fits on one line.
    """
