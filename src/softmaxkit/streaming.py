"""Streaming softmax over sources larger than memory: ``.npy`` files, arrays, iterables.

:func:`stream_normalizer`, :func:`stream_logsumexp` and :func:`stream_softmax` run
the online normalizer's mergeable state (:class:`softmaxkit.Normalizer`) over a
source read block by block within a memory budget; the driver is
``drivers/stream.py``.  Re-exported by ``softmaxkit`` and ``softmaxkit.online``.
The maths and the guarantees: ``docs/online.md``, "Streaming / out-of-core".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

from ._core import state as _state
from ._core.typing import Array, ArrayLike, Axis, DTypeLike
from ._core.validate import resolve_dtype
from ._normalizer import Normalizer

__all__ = ["stream_logsumexp", "stream_normalizer", "stream_softmax"]

#: What the streaming functions read: a ``.npy`` path, an array (e.g. a memmap), or an
#: iterable of chunks that concatenate along ``axis``.
Source: TypeAlias = str | os.PathLike[str] | ArrayLike | Iterable[ArrayLike]


def stream_normalizer(
    src: Source,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    memory: int | str = "256M",
    workers: int | None = None,
    progress: bool = False,
) -> Normalizer:
    """The :class:`Normalizer` of a source larger than memory, in one pass.

    Parameters
    ----------
    src : str, os.PathLike, ndarray or iterable of array_like
        A ``.npy`` file (a regular file, read block by block with ``preadv``;
        big-endian files are converted per block), an array (e.g. a
        ``numpy.memmap``), or an iterable of chunks that concatenate along
        ``axis``.
    axis : int or tuple of ints, default -1
        The reduced axes (an int for an iterable source).
    temperature : float, default 1.0
        Acts on ``x / temperature``.
    where : array_like of bool, optional
        Only for array sources: a mask broadcastable to the array.
    memory : int or str, default "256M"
        Working-memory budget: bytes, or a string with ``K``/``M``/``G``/``T`` or
        ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024) or ``KB``/``MB``/``GB``/``TB``
        (powers of 1000), from 1 KiB to 2**60 bytes.  Blocks are sized so that all
        workers together stay within it, whatever the row length.
    workers : int, optional
        Threads (default: the usable cores; at most 7 are used).
    progress : bool, default False
        Show a progress bar on stderr (tqdm when installed, else a text line).

    Returns
    -------
    Normalizer
        float64 state of the batch shape.

    Notes
    -----
    Peak extra memory: ``memory`` plus about 16 MB, plus the float64 state (16 bytes
    per row; ``MemoryError`` before any work when the state and a float64 result
    would not fit in the machine's physical memory, e.g. a header claiming 2**31 rows
    of zero length); the source is never loaded or mapped whole.  Results do not depend on
    ``workers`` (chunk states are merged in order).  A file truncated while it is
    read raises ``ValueError``; a non-regular file (FIFO, device) is refused before
    it is read.  See ``docs/online.md``, "Streaming / out-of-core".

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import stream_normalizer
    >>> chunks = [np.array([[0.1, 0.3]]), np.array([[0.08, -0.09]])]
    >>> st = stream_normalizer(chunks, axis=-1)
    >>> st.m, st.s.round(6)
    (array([0.3]), array([3.298306]))
    """
    from .drivers import stream as _stream

    m, s, t, _ = _stream.state(src, axis, temperature, where, memory, workers, progress)
    return Normalizer._raw(m, s, t)


def stream_logsumexp(
    src: Source,
    /,
    axis: Axis = -1,
    *,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    memory: int | str = "256M",
    workers: int | None = None,
    progress: bool = False,
) -> Array:
    """``logsumexp(x / T)`` over ``axis`` of a source larger than memory, in one pass.

    The source is read block by block; every block's (m, s) state is merged into
    the running :class:`Normalizer`, then ``m + log(s)`` is returned.

    Parameters
    ----------
    src : str, path, ndarray or iterable of ndarrays
        A ``.npy`` file (memory-mapped), an array, or chunks along ``axis``.
    axis, temperature, where, memory, workers, progress
        As for :func:`stream_normalizer`.

    Returns
    -------
    ndarray or scalar
        An array of the batch shape (a NumPy scalar when it is 0-d) in the dtype the
        dense :func:`softmaxkit.logsumexp` would give; edge cases as the dense op.

    Notes
    -----
    Peak extra memory: ``memory`` plus about 16 MB, plus the float64 state and the
    result (24 bytes per row; ``MemoryError`` before any work when they would not fit
    in the machine's physical memory).

    Examples
    --------
    >>> import numpy as np
    >>> from softmaxkit import stream_logsumexp
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> stream_logsumexp(iter([x[:, :2], x[:, 2:]]), axis=1).round(4)
    array([ 3.4402,  7.4402, 11.4402])
    """
    from .drivers import stream as _stream

    m, s, _, dt = _stream.state(
        src, axis, temperature, where, memory, workers, progress, "logsumexp"
    )
    lse, _ = _state.finalize(m, s)
    _, out_dtype = resolve_dtype(dt, None)
    res = lse.astype(out_dtype)
    return res[()] if res.ndim == 0 else res


def stream_softmax(
    src: Source,
    dst: str | os.PathLike[str],
    /,
    axis: Axis = -1,
    *,
    log: bool = False,
    temperature: float = 1.0,
    where: ArrayLike | None = None,
    dtype: DTypeLike | None = None,
    memory: int | str = "256M",
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Softmax (or log-softmax) of a source larger than memory, written to a ``.npy`` file.

    Two passes: the first builds the :class:`Normalizer` of every row, the second
    normalises chunk after chunk and writes them to ``dst``.  The output is written
    to a temporary file ``.NAME.softmaxkit-tmp.PID.RAND`` next to ``dst`` and renamed
    over it only when complete, so a crash or Ctrl-C leaves no partial file under
    ``dst``; its space is reserved up front (a full disk fails with ``OSError``
    before any work; for an iterable source, after the first pass, when its shape is
    known).  An existing ``dst`` must be a regular file: symbolic links, devices and
    FIFOs are refused with ``ValueError``.  A temporary left by a killed process is
    removed by the next write to the same ``dst`` (or ``softmaxkit clean DIR``).

    Parameters
    ----------
    src
        As for :func:`stream_normalizer`; an iterable source must be re-iterable
        (a list, or an object whose ``__iter__`` starts over), since it is read twice.
    dst : str or os.PathLike
        Output ``.npy`` path; same shape as the source.
    axis, temperature, where, memory, workers, progress
        As for :func:`stream_normalizer`.
    log : bool, default False
        Write ``log_softmax`` instead.
    dtype : dtype, optional
        Output dtype (default as the dense :func:`softmaxkit.softmax`).

    Returns
    -------
    pathlib.Path
        ``dst``.

    Notes
    -----
    Peak extra memory: ``memory`` plus about 16 MB, plus the float64 state.  The
    output keeps the source file's memory order (a Fortran-ordered file gives a
    Fortran-ordered output).  Edge cases as the dense op.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from softmaxkit import stream_softmax, softmax
    >>> x = np.random.default_rng(0).normal(size=(3, 1000))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     np.save(os.path.join(d, "x.npy"), x)
    ...     out = stream_softmax(os.path.join(d, "x.npy"), os.path.join(d, "p.npy"), memory="16K")
    ...     bool(np.allclose(np.load(out), softmax(x), rtol=1e-12, atol=0))
    True
    """
    from .drivers import stream as _stream

    return _stream.softmax_to_file(
        src, dst, axis, log, temperature, where, dtype, memory, workers, progress
    )
