"""Subcommands of the ``flickerless`` CLI beyond deflicker/demo, one module each.

A module here defines ``register(subparsers)``: it adds its parser and calls
``set_defaults(func=...)`` with a function taking the parsed args and returning the exit code.
Heavy imports belong inside that function so ``flickerless --help`` stays fast.
Helpers shared by several commands live in ``flickerless.cli`` (``_positive``, ``_window``...).
"""
