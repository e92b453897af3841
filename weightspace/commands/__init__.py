"""Subcommands of the ``weightspace`` command, one module each.

A module here defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``; list its
name in ``COMMANDS`` (weightspace/cli.py) to expose it.
"""
