"""Plugins: modules a config names (``plugins:``) that register estimators and kernels beyond
the built-in ones (``raybm.algorithms.registry.register``, ``raybm.samplers.registry.register``),
so that a new training method arrives as its own files plus a registration, without an edit
to the trainer.

A config is validated wherever it goes (the driver, each Ray worker, each Tune trial), and
every validation imports its plugins first; a Ray worker group also gets their import roots
on its ``PYTHONPATH`` (``plugin_roots``), so a plugin importable where the run starts is
importable on the workers of that machine (and of a cluster sharing its file system).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from raybm.errors import InputError


def load_plugins(names: Any) -> None:
    """Import each module of ``names`` (a config's ``plugins``); a one-line error naming
    ``plugins.<i>`` for one that cannot be imported. Anything but a list of names is left to
    the schema to refuse."""
    if not isinstance(names, list):
        return
    for i, name in enumerate(names):
        if not isinstance(name, str) or name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception as err:  # the plugin's own error, whatever it is, in one line
            raise InputError("", f"plugins.{i}", f"cannot import {name!r} "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:160]})"
                             ) from None


def plugin_roots(names: list[str]) -> list[str]:
    """The directories the ``names`` modules (already imported) were imported from: what a
    worker's ``PYTHONPATH`` needs to import them too."""
    roots = []
    for name in names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if path is None:
            continue
        root = Path(path).resolve().parent
        for _ in name.split(".")[1:]:  # a package's module: up to the package's parent
            root = root.parent
        if str(root) not in roots:
            roots.append(str(root))
    return roots
