"""Optional dependencies: which extra of the package brings each one, and a clear error when one is missing.

The base install (``pip install perfmodel``) predicts, compares, plans, sweeps and reports with NumPy, pandas,
SimPy and matplotlib alone. Measuring real kernels needs torch (``[measure]``), the package's Triton kernels need
torch and triton (``[kernels]``), sweeps as Dask tasks need dask (``[dask]``), Parquet files need pyarrow
(``[parquet]``; CSV needs nothing) and ``perfmodel fit`` needs scipy (``[fit]``). A command that needs one of them asks
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
    "parquet": "pyarrow",
    "fit": "scipy",
}
#: what the message of an ImportError the CLI catches says to install
HINT = ("the base install leaves out torch and triton ([measure], [kernels]), dask ([dask]), pyarrow ([parquet]) "
        "and scipy ([fit]): pip install -e '.[EXTRA]' in a checkout")


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


def parquet_engine() -> bool:
    """Whether pandas can read and write Parquet here (pyarrow or fastparquet installed)."""
    return available("pyarrow") or available("fastparquet")


def require_parquet(path: object, what: str) -> None:
    """Raise :class:`MissingExtra` when ``path`` is a Parquet file and no Parquet engine is installed."""
    if str(path).lower().endswith((".parquet", ".pq")) and not parquet_engine():
        raise MissingExtra("pyarrow", "parquet", f"{what} with a Parquet file ({path}; a .csv needs no extra)")


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` when ``module`` cannot be imported; ``what`` names the command needing it."""
    if not available(module):
        raise MissingExtra(module, extra, what)
