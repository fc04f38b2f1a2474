"""The embedded suites' data files on disk, which a method's child must not read (the harness hides them).

A method sees data only through its context. The built-in suites read files that ship with installed
packages — scikit-learn's digits (``sklearn/datasets/data``), CPython's ``pydoc_data`` text for the
language-model suite — so a child that could read them could load the held-out split itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# (package, folder inside it): the folders the embedded suites read their data from.
EMBEDDED_DATA = (("sklearn", "datasets/data"), ("pydoc_data", ""))


def embedded_data() -> list[Path]:
    """Those folders where the packages are installed (found without importing them)."""
    found = []
    for package, inside in EMBEDDED_DATA:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            path = Path(folder, inside)
            if path.exists():
                found.append(path)
    return found
