"""numba options of the engine, and a disk cache that cannot go stale.

numba's on-disk cache checks only the source file of the function it compiled, so a kernel kept
the old code of a helper inlined from another module after that module was edited (silently wrong
numbers). Here every function of the engine's modules (:data:`ENGINE_MODULES`) is cached under a
stamp that is the hash of all of them: editing any one recompiles every kernel on next use.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from numba.core import caching, config

from factorgym.envs import intrinsics

#: the modules the kernels compile from (any function of theirs may be inlined into a kernel)
ENGINE_MODULES = ("jit.py", "intrinsics.py", "layouts.py", "execution.py", "phases.py", "actions.py", "kernels.py",
                  "live/paper_kernel.py")
_HERE = Path(__file__).resolve().parent
ENGINE_FILES = tuple(str(_HERE / name) for name in ENGINE_MODULES)

# Every division in the kernels is guarded explicitly (or its divisor is validated > 0), so numpy's
# error model (no per-division zero check) is safe and lets LLVM optimise the loops.
JIT = dict(cache=True, error_model="numpy")


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=None)
def _hash_of(stamps: tuple) -> str:
    digest = hashlib.sha256()
    for path in ENGINE_FILES:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def engine_sources_hash() -> str:
    """sha256 of the engine's source files (re-read when a file's mtime or size changes)."""
    return _hash_of(tuple(_stamp(p) for p in ENGINE_FILES))


class EngineCacheLocator(caching._CacheLocator):
    """numba cache locator for the engine's functions: numba's own place for the cache files, and
    the hash of every engine source as the stamp an index must match to be used."""

    def __init__(self, inner: caching._CacheLocator) -> None:
        self._inner = inner
        self._py_file = inner._py_file  # (numba's warning for an uncachable function names it)

    def get_cache_path(self) -> str:
        return self._inner.get_cache_path()

    def get_source_stamp(self) -> str:
        # (+ the compile settings that change the code but not numba's own cache key)
        return f"{engine_sources_hash()}:boundscheck={config.BOUNDSCHECK}:poison={intrinsics.POISON_STACK}"

    def get_disambiguator(self) -> str:
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        # realpath, as _HERE: a module imported through a symlinked folder (factorgym/envs -> ../envs)
        # must still be found, or its kernels fall back to numba's per-file stamp and go stale
        if os.path.realpath(py_file) not in ENGINE_FILES:
            return None
        for locator in caching.CacheImpl._locator_classes:
            if locator is not cls:
                inner = locator.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
        return None


if EngineCacheLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, EngineCacheLocator)
