"""``softmaxkit bench``: softmaxkit against its peers, in one process, as ratios.

:mod:`softmaxkit.bench.core` selects and runs cases and writes the table, JSON,
Markdown and plot; :mod:`softmaxkit.bench.timing` holds the timing loop and the
``Case`` record; each other module here builds the cases of one family.
"""

from .core import format_markdown, format_table, machine, plot, run_cases, select_cases, to_json

__all__ = [
    "format_markdown",
    "format_table",
    "machine",
    "plot",
    "run_cases",
    "select_cases",
    "to_json",
]
