"""File-system helpers shared by the layers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir_beside(out: str | os.PathLike) -> Path:
    """A new temp folder beside ``out`` (``.<name>.XXXX``), to be renamed onto ``out`` when complete,
    with the permissions a plain ``mkdir`` gives under the current umask (``mkdtemp`` alone makes
    0700, so a published tensor or bundle would be private to its writer)."""
    out = Path(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp
