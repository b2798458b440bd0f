"""perfmodel: predict and explain LLM inference performance on GPUs.

    >>> import perfmodel
    >>> p = perfmodel.predict("h100-sxm", "llama-3.1-8b", "arm", {"batch": 8})
    >>> p["tokens_per_s"], p["bound"]
"""
from __future__ import annotations

__version__ = "0.1.0"


def predict(*args, **kwargs):
    """See :func:`perfmodel.api.predict`."""
    from perfmodel.api import predict as _predict

    return _predict(*args, **kwargs)


def predict_op(*args, **kwargs):
    """See :func:`perfmodel.api.predict_op`."""
    from perfmodel.api import predict_op as _predict_op

    return _predict_op(*args, **kwargs)


__all__ = ["predict", "predict_op", "__version__"]
