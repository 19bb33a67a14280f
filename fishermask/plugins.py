"""Plug-ins: a dataset factory, a network or a strategy named by a config key in one of three forms.

* a **built-in name** (``margin``, ``cnn_small``, ``digits``);
* an **import path** ``package.module:attribute`` (the attribute may be dotted: ``mod:Class.make``);
* a **short name** registered by an installed distribution's entry point in the group
  ``fishermask.datasets``, ``fishermask.models`` or ``fishermask.strategies``.

:func:`resolve` imports the target and says where it came from (:class:`Plugin`); every failure is
a :class:`PluginError` (exit code 2 under the CLI) naming the config key, the path and what is
wrong.  The kinds' own contracts (a factory's arguments, a ``Strategy`` subclass) are checked by
the layer that owns them.  An import path is looked up on ``sys.path`` and then in the folders of
:func:`search_folders` (the config file's folder and the working folder), so a module next to a
sweep file needs no installation; such a module travels to Ray workers through ``py_modules``
(:func:`local_modules`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from fishermask._compat import import_torchvision
from fishermask.errors import ConfigError

GROUPS = {"datasets": "fishermask.datasets", "models": "fishermask.models",
          "strategies": "fishermask.strategies"}
SINGULAR = {"datasets": "dataset", "models": "model", "strategies": "strategy"}
PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

_folders: list[str] = []
_imported: list[str] = []  # import paths resolved in this process (their modules go to Ray workers)


class PluginError(ConfigError):
    """A plug-in that cannot be used: not found, not importable, or not the right kind."""


@dataclass(frozen=True)
class Plugin:
    """A resolved plug-in: the object, the import path it was loaded from, and where it came from
    (``builtin``, ``import path`` or ``entry point``) with its distribution where it has one."""

    obj: Any
    name: str                     # as the config names it
    path: str                     # module:attribute
    source: str
    distribution: Optional[str] = None
    version: Optional[str] = None

    @property
    def provenance(self) -> str:
        """What ran, for MLflow: ``module:attribute`` and ``(distribution version)``."""
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"{self.path}{dist}"


def search_folders(*folders: str | Path) -> None:
    """Also look for import paths in ``folders`` (e.g. the config file's folder), after
    ``sys.path``; later calls replace the list."""
    _folders[:] = [str(Path(f).resolve()) for f in folders if f]


def is_import_path(name: str) -> bool:
    return bool(PATH_RE.match(name or ""))


def _entry_points(kind: str) -> dict[str, md.EntryPoint]:
    return {ep.name: ep for ep in md.entry_points(group=GROUPS[kind])}


def _import(module: str, key: str, name: str):
    if module.split(".")[0] == "torchvision":
        import_torchvision()  # importable on CPU torch too
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise PluginError(f"{key}: importing {name!r} failed inside module {module!r}: "
                              f"{exc}") from None
        for folder in _folders:  # a module next to the config file or in the working folder
            if folder not in sys.path and _has_module(folder, module):
                sys.path.append(folder)
                return importlib.import_module(module)
        where = ", ".join(_folders) or "the working folder"
        raise PluginError(f"{key}: {name!r}: no module named {exc.name!r} (looked on sys.path and "
                          f"in {where}); install the package, or put the module next to the "
                          f"config file") from None
    except Exception as exc:  # a syntax error or an exception at import time
        raise PluginError(f"{key}: importing module {module!r} for {name!r} failed: "
                          f"{type(exc).__name__}: {exc}") from None


def _has_module(folder: str, module: str) -> bool:
    top = Path(folder) / module.split(".")[0]
    return top.with_suffix(".py").is_file() or (top / "__init__.py").is_file()


def load_path(path: str, key: str, name: Optional[str] = None):
    """The object at ``module:attribute`` (a PluginError naming ``key`` otherwise)."""
    name = name or path
    module, _, attr = path.partition(":")
    obj = _import(module, key, name)
    for part in attr.split("."):
        if not hasattr(obj, part):
            have = [a for a in dir(obj) if not a.startswith("_")]
            near = difflib.get_close_matches(part, have, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise PluginError(f"{key}: {name!r}: {type(obj).__name__} {getattr(obj, '__name__', '')!r} "
                              f"has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
    return obj


def _distribution(module: str) -> tuple[Optional[str], Optional[str]]:
    top = module.split(".")[0]
    for dist in md.packages_distributions().get(top, []):
        try:
            return dist, md.version(dist)
        except md.PackageNotFoundError:
            continue
    return None, None


def resolve(kind: str, name: str, key: str, builtins: dict[str, Any]) -> Plugin:
    """The plug-in ``name`` of ``kind`` (datasets, models, strategies) that the config key ``key``
    names: a built-in (``builtins``), an import path, or an entry point of group
    ``fishermask.<kind>``."""
    if not isinstance(name, str) or not name:
        raise PluginError(f"{key}: give a {SINGULAR[kind]} name (one of {', '.join(builtins)}), "
                          f"an import path package.module:attribute, or an installed plug-in's "
                          f"name")
    if name in builtins:
        obj = builtins[name]
        return Plugin(obj, name, f"{getattr(obj, '__module__', '')}:"
                                 f"{getattr(obj, '__qualname__', name)}", "builtin")
    if ":" in name:
        if not is_import_path(name):
            raise PluginError(f"{key}: {name!r} is not an import path; write "
                              f"package.module:attribute (e.g. mypkg.nets:MyNet)")
        obj = load_path(name, key)
        dist, version = _distribution(name.partition(":")[0])
        if name not in _imported:
            _imported.append(name)
        return Plugin(obj, name, name, "import path", dist, version)
    eps = _entry_points(kind)
    if name in eps:
        ep = eps[name]
        obj = load_path(ep.value.replace(" ", ""), key, f"{name} ({ep.value})")
        dist = ep.dist.metadata["Name"] if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        return Plugin(obj, name, ep.value, "entry point", dist, version)
    names = list(builtins) + sorted(eps)
    raise PluginError(f"{key}: unknown {SINGULAR[kind]} {name!r}; valid {kind}: "
                      f"{', '.join(names)} (or an import path package.module:attribute)")


def available(kind: str, builtins: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, where it comes from) of every built-in and installed plug-in of ``kind``."""
    out = [(name, "built-in") for name in builtins]
    for name, ep in sorted(_entry_points(kind).items()):
        dist = f"{ep.dist.metadata['Name']} {ep.dist.version}" if ep.dist is not None else "?"
        out.append((name, f"{ep.value} (entry point of {dist})"))
    return out


def local_modules(paths: Optional[Iterable[str]] = None) -> list[str]:
    """The files or package folders of the modules of ``paths`` (import paths; default: every
    import path resolved in this process) that are not part of an installed distribution: what
    Ray workers need as ``py_modules``."""
    paths = list(_imported) if paths is None else paths
    site = {os.path.realpath(p) for p in (sysconfig.get_paths()["purelib"],
                                           sysconfig.get_paths()["platlib"])}
    out: list[str] = []
    for path in paths:
        if not is_import_path(path):
            continue
        top = path.partition(":")[0].split(".")[0]
        mod = sys.modules.get(top) or importlib.import_module(top)
        file = getattr(mod, "__file__", None)
        if not file or _distribution(top)[0] is not None:
            continue
        where = os.path.dirname(file) if file.endswith("__init__.py") else file
        real = os.path.realpath(where)
        if any(real.startswith(s + os.sep) for s in site) or top == "fishermask":
            continue
        if where not in out:
            out.append(where)
    return out


__all__ = ["GROUPS", "Plugin", "PluginError", "available", "is_import_path", "load_path",
           "local_modules", "resolve", "search_folders"]
