"""Lazy public names for the package ``__init__`` modules.

Each package lists its public names in a table ``name -> "module:attribute"`` and calls
:func:`export_lazily` once; a name is imported on first use, so ``import factorgym`` stays light
(no torch, pandas or numba until asked for). To export one more name, add one line to the
package's table, e.g. ``"load_policy": "factorgym.agents.bundle:load_policy"``.

A function may share its name with the module that defines it (``factorgym.envs.backtest``): the
import system sets a package attribute to each submodule it imports, which would replace the
function by its module. Exported names win: ``factorgym.envs.backtest`` is the function whatever
was imported before. The module itself stays reachable by ``from factorgym.envs.backtest import
...`` and ``importlib.import_module("factorgym.envs.backtest")`` (but ``import
factorgym.envs.backtest as m`` binds the package attribute, the function). So export a function
under its module's name only where the issue asks for it; ``factorgym.data_layer.download`` stays
the module, its function is ``factorgym.data_layer.download.download``.
"""

from __future__ import annotations

import importlib
import sys
import types


class _LazyModule(types.ModuleType):
    """Module type whose missing attributes are resolved from its ``_lazy_exports`` table."""

    def __getattr__(self, name: str):
        exports = self.__dict__.get("_lazy_exports", {})
        if name not in exports:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module_name, _, attr = exports[name].partition(":")
        value = getattr(importlib.import_module(module_name), attr or name)
        self.__dict__[name] = value  # cached: the next access is a plain dict lookup
        return value

    def __setattr__(self, name: str, value) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if (name in exports and isinstance(value, types.ModuleType)
                and exports[name].partition(":")[0] == value.__name__ and exports[name].partition(":")[2]):
            return  # a submodule named like the function it exports: keep the function
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_exports", {})))


def export_lazily(module_name: str, exports: dict[str, str]) -> None:
    """Give the module ``module_name`` the lazy public names ``exports`` (``name -> "module:attr"``;
    the attribute defaults to ``name``) and add them to its ``__all__``."""
    module = sys.modules[module_name]
    module.__dict__.setdefault("_lazy_exports", {}).update(exports)
    module.__all__ = list(dict.fromkeys([*getattr(module, "__all__", []), *exports]))
    if not isinstance(module, _LazyModule):
        module.__class__ = _LazyModule
    for name in exports:  # an export already shadowed by its submodule gets the function back
        if isinstance(module.__dict__.get(name), types.ModuleType):
            del module.__dict__[name]
