"""File mechanics of the candle store: safe folder names, atomic replacement, advisory locks.

Every write goes to a temp file in the same folder, is fsync'ed and then ``os.replace``'d over the
old file: a crash leaves the old file or the new one, never half of one. Writers of the same file
also take an advisory ``fcntl`` lock (where the platform has one). A temp file left by a killed
writer (its name carries the writer's pid) is removed by the next write of the same file.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import uuid
from pathlib import Path

from factorgym.errors import DataValidationError

try:  # POSIX advisory locks; elsewhere atomic rename alone keeps files whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """File-system-safe folder name: anything outside ``[A-Za-z0-9._-]`` becomes ``_``; a leading
    dot becomes ``_`` too, so ``..`` or hidden names cannot appear."""
    out = _UNSAFE.sub("_", str(name)) or "_"
    return "_" + out[1:] if out.startswith(".") else out


def hashed_name(name: str) -> str:
    return f"{safe_name(name)}~{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened/fsync'ed
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM)
        return True
    return True


def remove_stale_temps(path: Path) -> int:
    """Delete ``path``'s temp files (``.<name>.<pid>.<id>.tmp``) whose writer process is gone (killed
    mid-write); a live writer's temp file is left alone. Returns how many were removed."""
    removed = 0
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
                log.info("removed %s, left by a killed writer", tmp)
    return removed


def atomic_write(path: Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)``, fsync, then ``os.replace`` onto ``path``; the temp file is removed
    on any failure, so a crash leaves the old file untouched. Temp files of killed writers of the
    same file are removed first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def locked(lock_path: Path):
    """Exclusive advisory lock on ``lock_path`` (no-op where fcntl is missing)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"{what} {path} is not valid JSON ({exc}): fix or delete it") from exc
    if not isinstance(data, dict):
        raise DataValidationError(f"{what} {path} must hold a JSON object: fix or delete it")
    return data
