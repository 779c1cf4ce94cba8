"""Dask driver: the softmax family on ``dask.array.Array`` inputs, lazily.

Ops: ``softmax``, ``log_softmax``, ``logsumexp`` (dispatched from the public
functions), and ``topk_softmax``, ``cross_entropy``, ``softmax_vjp``,
``log_softmax_vjp``, ``logsumexp_vjp`` with the signatures of the NumPy functions
of the online and losses families (plus ``split_every=`` everywhere).

Imported only when the input already is a dask array (``softmax._foreign``), so
``import softmaxkit`` never imports dask.  One algorithm, several drivers: every
op here is built from the mergeable ``(m, s)`` state of :mod:`softmaxkit._core.state`
in three steps (flox's chunk / combine / aggregate):

1. **chunk** -- :func:`block_states`: one ``blockwise`` task per block of ``x`` runs
   :func:`softmaxkit._core.state.chunk_state` (the same Numba kernel as the NumPy path)
   and returns the block's state with size-1 reduced axes;
2. **combine / aggregate** -- :func:`state`: ``dask.array.reduction`` merges the
   states along the reduced axes in a tree (``split_every`` honoured, from the
   argument or ``dask.config``), with :func:`softmaxkit._core.state.merge`;
3. **finalize** -- reductions (``logsumexp``) map :func:`softmaxkit._core.state.finalize`
   over the state; elementwise outputs (``softmax``) use :func:`map_with_state`, a
   ``blockwise`` map that hands each block of ``x`` its rows' final state.

So ``logsumexp`` reads the data once and ``softmax`` twice (the state reduction,
then the normalising map).  The state travels as a structured array
(:data:`STATE`, fields ``m`` and ``s``, float64), so dask concatenates, pickles
and ships it like any other array.

Modules: ``_common`` (inputs, the state reduction, shared block helpers), one per
family -- ``dense``, ``online`` (top-k), ``losses``, ``grad`` (VJPs), ``segments``
(segment ops and scans) -- re-exported here.  Adding an op: see
``docs/scaling.md`` ("Adding an op to the Dask driver").
"""

from ._common import (
    STATE,
    Prepared,
    align,
    block_states,
    known_shape,
    map_with_state,
    prepare,
    state,
)
from .dense import log_softmax, logsumexp, softmax
from .grad import log_softmax_vjp, logsumexp_vjp, softmax_vjp
from .losses import cross_entropy
from .online import TOPK, topk_softmax

__all__ = [
    "STATE",
    "TOPK",
    "Prepared",
    "align",
    "block_states",
    "cross_entropy",
    "known_shape",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "logsumexp_vjp",
    "map_with_state",
    "prepare",
    "softmax",
    "softmax_vjp",
    "state",
    "topk_softmax",
]
