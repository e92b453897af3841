"""What the data-making commands share: library errors named by option, imports safe from Ctrl-C.

Decision: arguments are checked once, by the library function that uses them, before any work or
write (:mod:`weightspace.data._args`); its :class:`~weightspace.errors.UsageError` names the parameter
(``limit``), and :func:`option_names` renames that to the command's option (``--limit``) when the
command has one. So ``weightspace fit-inrs --limit -5`` and ``make_inr_zoo(limit=-5)`` are refused by
the same rule, each in its own words.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Iterator

from ..errors import UsageError
from ..interrupts import deferred_sigint


@contextmanager
def option_names(args) -> Iterator[None]:
    """Re-raise a ``UsageError`` about parameter ``p`` as one about ``--p`` (underscores as dashes)
    when ``p`` is one of the command's options (a key of ``vars(args)``)."""
    try:
        yield
    except UsageError as e:
        if e.where in vars(args):
            raise UsageError(e.what, "--" + e.where.replace("_", "-")) from e
        raise


def preload(*modules: str) -> None:
    """Import ``modules`` whole: a Ctrl-C meanwhile takes effect after them (see
    :mod:`weightspace.interrupts`: an import cut in half leaves numpy / scipy / scikit-learn broken,
    and the command would die of an ``AttributeError`` instead of saying "interrupted")."""
    with deferred_sigint():
        for name in modules:
            importlib.import_module(name)
