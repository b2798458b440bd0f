"""Output files: written whole or not at all, only where they belong, with the user's permissions.

Writing a file is like moving into a new flat: the furniture goes into a spare room first (a temporary file in the
destination folder) and the door is swapped only when everything is in (an atomic rename), so a crash or a full
disk leaves the previous file, never half of a new one. Names that come from user input (a device name, a method
label) become file names only through :func:`slug`, and :func:`inside` refuses any path that would land outside
the output folder. New files get the permissions the user's umask gives any file they create (a temporary file
alone would be private to its owner).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SLUG = 80


def slug(name: str) -> str:
    """A file-name stem made from ``name``: letters, digits, '.', '_' and '-' only, no leading dot, at most
    :data:`MAX_SLUG` characters. Names that had to change get a short hash of the original, so that two
    different names never share a file ("a/b" and "a-b" stay apart)."""
    text = str(name)
    clean = _UNSAFE.sub("-", text).strip(".-")[:MAX_SLUG] or "unnamed"
    if clean != text:
        clean = f"{clean[:MAX_SLUG - 9]}-{hashlib.sha256(text.encode('utf-8', 'replace')).hexdigest()[:8]}"
    return clean


def inside(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative`` (``relative`` may also be an absolute path), or a ``ValueError`` when that path is not
    inside ``root`` after resolving '..' and links."""
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{relative}: a path outside the output folder {root}, expected a path inside it")
    return path


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than two system calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[Path], None], *,
                 root: str | os.PathLike | None = None) -> Path:
    """Write ``content`` (bytes, text in UTF-8, or a function that writes the file at the path it is given) to
    ``path`` through a temporary file in the same folder and an atomic rename; returns the path written.

    With ``root``, the path must lie inside that folder (:func:`inside`). The file gets mode ``0o666 & ~umask``.
    """
    path = Path(path)
    if root is not None:
        inside(root, path.resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
