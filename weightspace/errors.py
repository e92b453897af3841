"""User-facing errors: what the ``weightspace`` command reports as one line and exit code 2.

Design: library code raises the error class that says what is wrong (``SpecError``, ``TraceError``,
``CheckpointError``, ``DataFormatError``, or ``UsageError`` for a bad argument or option); the command
line turns every one of them into ``weightspace <cmd>: error: <what> (<file or argument>)``. Anything
else is a bug in weightspace and keeps its traceback. ``user_errors()`` is the one list of those
classes, so a new error family is added here and nowhere else.
"""
from __future__ import annotations


class UsageError(ValueError):
    """A bad argument, option or input combination; the message names the argument or file."""

    def __init__(self, what: str, where: str | None = None):
        self.what, self.where = what, where
        super().__init__(f"{what} ({where})" if where else what)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the user's input is wrong", not "weightspace has a bug"."""
    from .data.idx import DataFormatError
    from .io import CheckpointError
    from .spec.errors import SpecError, TraceError

    return (UsageError, SpecError, TraceError, CheckpointError, DataFormatError, FileNotFoundError,
            NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)
