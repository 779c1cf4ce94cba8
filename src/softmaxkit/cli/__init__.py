"""The ``softmaxkit`` command line.

:mod:`softmaxkit.cli.core` builds the parser and runs commands; each other module
here is a plugin that adds the subcommands of one family (``dense``, ``online``,
``losses``, ``quantized``, ``segments``, ``sample``, ``bench``, ``warmup``).
"""

from .core import build_parser, main

__all__ = ["build_parser", "main"]
