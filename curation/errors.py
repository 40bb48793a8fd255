"""Errors that the CLI turns into one line on stderr and exit status 2.

Only InputError (and its subclasses, e.g. `curation.dataset.ManifestError`)
means bad input; `curate` shows any other exception as a bug, with its
traceback and exit status 1. So code that detects bad input raises
InputError itself, at the place that knows the file, line or option at fault.
"""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input from the user: a missing file, a malformed line, a wrong option.

    The message names the file, line or column at fault and fits on one line.
    """

