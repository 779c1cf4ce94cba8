"""``python -m softmaxkit`` runs the command-line interface."""

from .cli.core import console

console()
