"""Finding methods without running them in the harness: importing happens in a child, names come back.

A method file's import-time code is method code, so the pytest process never imports method files
or method packages: a discovery child does (:func:`find_methods`) and reports each method's name,
where it lives and its source hash (:class:`~.protocol.MethodInfo`); each case's child imports the
one module its method lives in (:func:`load_method`). Methods registered by a project's
``conftest.py`` are the exception pytest itself makes: pytest imports conftest files, so their
import-time code runs in the pytest process (the docs say methods under review belong in method
files); their *calls* still run in children, which inherit them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import py_compile
from pathlib import Path
from typing import Any, Iterable

from ..registry import load_file, load_files
from ..suites.registry import SUITES
from .methods import ENTRY_POINT_GROUP, METHODS, Method, source_hash
from .protocol import MethodInfo

METHOD_FILES_NAMESPACE = "shrinkbench_methods"


def _origin(method: Method, preexisting: set[str], installed: set[str]) -> str:
    """Where a case's process finds the method again: its file, its installed module, or (registered before
    discovery, by a conftest that every process imports) the registry it inherits."""
    module = method.fn.__module__
    if module.startswith(METHOD_FILES_NAMESPACE + "."):
        return f"file:{inspect.getsourcefile(method.fn)}"
    if method.name in preexisting and not any(module == m or module.startswith(m + ".") for m in installed):
        return "registered"
    return f"module:{module}"


def find_methods(folders: Iterable[Path]) -> dict[str, Any]:
    """Import installed method packages and the method files in ``folders``; describe every method known.

    Returns ``{"methods": [MethodInfo...], "errors": {where: message}, "suites": [names]}``: a file or
    package that fails to import is reported, not fatal; ``suites`` are suites that method files
    registered (they belong in ``conftest.py``: the harness's own process never sees them).
    """
    preexisting, suites_before = set(METHODS.names()), set(SUITES.names())
    errors: dict[str, str] = {}
    entries = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    installed = {entry.module for entry in entries}
    for entry in entries:
        try:
            importlib.import_module(entry.module)
        except Exception as exc:  # noqa: BLE001  (one broken package must not hide the others)
            errors[f"entry point {entry.name} ({entry.module})"] = f"{type(exc).__name__}: {exc}"
    found = load_files([f for f in folders if f.is_dir()], namespace=METHOD_FILES_NAMESPACE)
    errors.update({str(path): message for path, message in found.items()})
    methods = [
        MethodInfo(m.name, _origin(m, preexisting, installed), source_hash(m.fn), m.baseline, m.steps, m.regrowth, m.pattern)
        for m in (METHODS.get(name) for name in METHODS.names())
    ]
    return {"methods": methods, "errors": errors, "suites": sorted(set(SUITES.names()) - suites_before)}


def load_method(info: MethodInfo) -> Method:
    """In a case's child: import the module ``info`` points at (if any) and return the registered method."""
    kind, _, where = info.origin.partition(":")
    if kind == "module":
        importlib.import_module(where)
    elif kind == "file":
        path = Path(where)
        load_file(path, f"{METHOD_FILES_NAMESPACE}.{path.parent.name}.{path.stem}")
    if info.name not in METHODS:
        raise LookupError(f"method {info.name!r} is no longer defined where discovery found it ({info.origin})")
    return METHODS.get(info.name)


def precompile(methods: Iterable[MethodInfo]) -> None:
    """Compile the method files to bytecode now, from the harness: a walled child cannot write
    ``__pycache__``, so without this every case would compile its method from source. Compiling
    runs no code of the file."""
    for path in {Path(m.origin.partition(":")[2]) for m in methods if m.origin.startswith("file:")}:
        try:
            py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)), doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # a read-only folder or a syntax error: the child compiles (or reports) it


def file_hash(info: MethodInfo) -> str:
    """The source hash of a method file, read by the harness itself (a file's bytes are what they are,
    whatever the method's code might claim); other origins keep the hash discovery reported."""
    kind, _, where = info.origin.partition(":")
    if kind != "file":
        return info.source_hash
    return hashlib.sha256(Path(where).read_bytes()).hexdigest()[:12]
