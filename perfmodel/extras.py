"""Optional dependencies: which extra of the package brings each one, and a clear error when one is missing.

The base install (``pip install perfmodel``) predicts, compares, plans, sweeps and reports with NumPy, pandas and
SimPy alone. Measuring real kernels needs torch (``[measure]``), the package's Triton kernels need torch and
triton (``[kernels]``), sweeps as Dask tasks need dask (``[dask]``). A command that needs one of them asks
:func:`require` first, so a missing library is one sentence naming the extra, not an ``ImportError`` traceback.
"""
from __future__ import annotations

import importlib.util

#: extra -> what it installs, as written in pyproject.toml (torch stays pinned: an unpinned torch pulls a
#: multi-GB CUDA build)
EXTRAS: dict[str, str] = {
    "measure": "torch==2.13.0",
    "kernels": "torch==2.13.0 and triton",
    "dask": "dask[distributed]",
}


class MissingExtra(ValueError):
    """A command needs a library that the base install leaves out; the message names the extra to install."""

    def __init__(self, module: str, extra: str, what: str):
        self.module = module
        self.extra = extra
        super().__init__(f"{what} needs {module}, which the base install leaves out: install the [{extra}] extra "
                         f"(pip install -e '.[{extra}]' in a checkout, or pip install 'perfmodel[{extra}]'; it "
                         f"brings {EXTRAS[extra]})")


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` when ``module`` cannot be imported; ``what`` names the command needing it."""
    if not available(module):
        raise MissingExtra(module, extra, what)
