"""Private Numba kernels.  They see C-contiguous (or strided) rows and never validate.

Importing the package installs the compile log and the no-disk cache fallback
(``_hooks``) before any kernel module is decorated.
"""

from . import _hooks

_hooks.install()
