"""Routing from softmaxkit's public functions to the operators.

The public layer never imports this package: it calls
``softmaxkit._core.routes.route("torch", name, args)``, which imports this module by
name on first use; the ``register`` call at the bottom installs :func:`_route`.
"""

import numpy as np
import torch

from .._core.routes import register
from ._common import _FLOATS, _as_mask, _check_float, _dims, _tensor, _with_grad
from ._ops_dense import (
    _log_softmax_bw_op,
    _softmax_bw_op,
    log_softmax,
    logsumexp,
    softmax,
    topk_softmax,
)
from ._ops_distill import ROUTES as _DISTILL_ROUTES
from ._ops_losses import cross_entropy, linear_cross_entropy, max_margin_loss, multiclass_hinge_loss
from ._ops_scan import ROUTES as _SCAN_ROUTES
from ._ops_vocab import ROUTES as _VOCAB_ROUTES

_PUBLIC = {
    "softmax": softmax,
    "log_softmax": log_softmax,
    "logsumexp": logsumexp,
    "multiclass_hinge_loss": multiclass_hinge_loss,
    "max_margin_loss": max_margin_loss,
}


# ------------------------------------------------- routing from the public functions
def _torch_dtype(dtype):
    """``dtype`` (None, a torch dtype or a NumPy-style name) as a torch dtype, or False."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        return False
    return {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}.get(
        name, False
    )


def _route(name, args):
    """Run public function ``name`` (its arguments ``args``) on torch tensors.

    Called by :func:`softmaxkit.softmax` and the other public functions when their
    first argument is a torch tensor.  Returns ``NotImplemented`` where the
    operators do not cover the call (``out=``, a non-float dtype), and the caller
    then takes the generic Array API path.
    """
    a = dict(args)
    extra = _DISTILL_ROUTES.get(name) or _VOCAB_ROUTES.get(name) or _SCAN_ROUTES.get(name)
    if extra is not None:  # distillation, sampling, segments, scans
        return extra(a)
    if name in ("softmax", "log_softmax", "logsumexp"):
        x = a.pop("x")
        dt = _torch_dtype(a.pop("dtype"))
        if a.pop("out") is not None or dt is False or x.dtype not in _FLOATS:
            return NotImplemented
        if name == "logsumexp":
            a["b"] = _tensor(a["b"], x)
        a["where"] = _tensor(a["where"], x)
        return _PUBLIC[name](x, a.pop("axis"), dtype=dt, **a)
    if name in ("softmax_vjp", "log_softmax_vjp"):
        y, g = a["y"], _tensor(a["g"], a["y"])
        if a["out"] is not None:
            return NotImplemented
        _check_float("y", y)
        op = _log_softmax_bw_op if name == "log_softmax_vjp" else _softmax_bw_op
        where = _as_mask(_tensor(a["where"], y), y)
        return op(y, g.to(y.dtype).expand(y.shape), _dims(a["axis"], y.ndim),
                  float(a["temperature"]), where)  # fmt: skip
    if name == "logsumexp_vjp":
        x = a["x"]
        _check_float("x", x)
        kw = dict(b=_tensor(a["b"], x), keepdims=a["keepdims"], temperature=a["temperature"],
                  where=_tensor(a["where"], x))  # fmt: skip
        _, (gx,) = _with_grad(
            lambda xr: logsumexp(xr, a["axis"], **kw),
            [x],
            lambda lse: _tensor(a["g"], x).to(lse.dtype).expand(lse.shape),  # upstream g
        )
        return gx
    if a.get("out") is not None:
        raise TypeError(f"{name}: out= is not supported for torch tensors")
    a.pop("out", None)
    rg = a.pop("return_grad", False)
    if name == "cross_entropy":
        logits = a.pop("logits")
        target = _tensor(a.pop("target"), logits)
        a["weight"] = _tensor(a["weight"], logits)
        if not rg:
            return cross_entropy(logits, target, **a)
        loss, (gr,) = _with_grad(lambda lg: cross_entropy(lg, target, **a), [logits])
        return loss, gr
    if name == "linear_cross_entropy":
        h, W = a.pop("hidden"), a.pop("linear_weight")
        t = _tensor(a.pop("target"), h)
        b = _tensor(a.pop("bias"), h)
        a["weight"] = _tensor(a["weight"], h)
        if not rg:
            return linear_cross_entropy(h, W, t, bias=b, **a)
        # (loss, (d_hidden, d_weight, d_bias or None))
        return _with_grad(
            lambda hh, ww, bb: linear_cross_entropy(hh, ww, t, bias=bb, **a), [h, W, b]
        )
    if name == "topk_softmax":
        x = a.pop("x")
        return topk_softmax(x, a.pop("k"), a.pop("axis"), where=_tensor(a.pop("where"), x), **a)
    if name in ("multiclass_hinge_loss", "max_margin_loss"):
        first = "logits" if name == "multiclass_hinge_loss" else "scores"
        x = a.pop(first)
        f = _PUBLIC[name]
        pos = (x, _tensor(a.pop("target"), x)) if first == "logits" else (x, a.pop("num_negatives"))
        if first == "logits":
            a["weight"] = _tensor(a["weight"], x)
        if not rg:
            return f(*pos, **a)
        loss, (gr,) = _with_grad(lambda xr: f(xr, *pos[1:], **a), [x])
        return loss, gr
    return NotImplemented


register("torch", _route)
