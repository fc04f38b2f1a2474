"""Finding methods without running them in the harness, and without trusting what a method file says.

A method file's import-time code is method code, so the pytest process never imports method files
or method packages. The harness chooses what to import (:func:`targets`: each installed entry
point's module and each ``*.py`` of the method folders) and has each one imported in a discovery
child of its own, under a deadline (:func:`describe` runs there). A child's reply is untrusted: it
can only *name* methods of the file or module that child imported (:func:`accept` ignores any other,
and checks every field); where a method lives and its source hash are computed by the harness from
the file it chose (:func:`file_hash`, :func:`module_hash`), never taken from a reply. A name claimed
by two files runs under neither. So one file cannot put its code under another file's method, or
change another method's settings, and a file whose import hangs costs its own methods only.

Each case's child imports the one module its method lives in (:func:`load_method`). Methods
registered by a project's ``conftest.py`` are the exception pytest itself makes: pytest imports
conftest files, so their import-time code runs in the pytest process (the docs say methods under
review belong in method files); their *calls* still run in children, which inherit them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import importlib.util
import py_compile
import sys
import tokenize
from pathlib import Path
from typing import Any, Iterable

from ..prunable import parse_pattern
from ..registry import load_file, load_files
from ..suites.registry import SUITES
from .methods import ENTRY_POINT_GROUP, METHODS, Method, source_hash
from .protocol import MethodInfo, printable

METHOD_FILES_NAMESPACE = "shrinkbench_methods"
# Seconds a method file or module may take to import, at discovery and in a case's child (--shrink-import-timeout).
IMPORT_TIMEOUT = 120.0
MAX_REPLY_BYTES = 1 << 20  # a discovery child's reply: names and flags, far below this
MAX_NAME_CHARS = 100


# -- what the harness chooses, and what it computes itself ------------------------------------------

def method_files(folders: Iterable[Path]) -> list[Path]:
    """The method files of ``folders``: each ``*.py`` but ``_*.py``, resolved, sorted per folder."""
    found: list[Path] = []
    for folder in folders:
        if Path(folder).is_dir():
            found += [p.resolve() for p in sorted(Path(folder).glob("*.py")) if not p.name.startswith("_")]
    return list(dict.fromkeys(found))


def entry_modules() -> list[str]:
    """The modules installed packages list as method entry points (importing one registers its methods)."""
    return sorted({entry.module for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def targets(folders: Iterable[Path]) -> list[str]:
    """What discovery imports, one child each: ``module:<name>`` per entry point module, ``file:<path>`` per file."""
    return [f"module:{m}" for m in entry_modules()] + [f"file:{p}" for p in method_files(folders)]


def file_module(path: Path) -> str:
    """The module name a method file is imported as, at discovery and in a case's child alike."""
    return f"{METHOD_FILES_NAMESPACE}.{path.parent.name}.{path.stem}"


def file_hash(path: Path) -> str:
    """A method file's source hash, from its bytes, read by the harness itself."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def module_file(name: str) -> Path | None:
    """The source file of module ``name``, found as the import system would find it, without importing anything:
    each finder of ``sys.meta_path`` asked for each dotted prefix in turn, with the parent's search path
    (:func:`importlib.util.find_spec` would import the parents, running ``a/__init__.py`` here)."""
    search: list[str] | None = None
    spec = None
    parts = name.split(".")
    for depth in range(len(parts)):
        spec = _find_spec(".".join(parts[:depth + 1]), search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") and Path(origin).is_file() else None


def _find_spec(name: str, path: list[str] | None) -> Any:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is not None:
            try:
                spec = find(name, path)
            except (ImportError, TypeError, ValueError):
                continue
            if spec is not None:
                return spec
    return None


def module_hash(name: str) -> str:
    """An installed module's source hash, read by the harness itself: the module's source as ``inspect`` reads
    it (so the baselines' hashes, and the keys of their stored rows, are what they always were)."""
    path = module_file(name)
    if path is None:
        raise ValueError(f"the harness cannot find the source file of module {name!r}")
    with tokenize.open(path) as handle:
        return hashlib.sha256(handle.read().encode()).hexdigest()[:12]


def registered_here() -> list[MethodInfo]:
    """Methods this process registered itself (a ``conftest.py`` pytest imported, a notebook cell): every child
    inherits them. Those of installed modules and method files are discovered in children instead."""
    installed = entry_modules()
    return [MethodInfo(m.name, "registered", source_hash(m.fn), m.baseline, m.steps, m.regrowth, m.pattern, m.calibrated)
            for m in (METHODS.get(n) for n in METHODS.names())
            if not _under(m.fn.__module__, [*installed, METHOD_FILES_NAMESPACE])]


def planned_names(path: Path) -> list[str]:
    """The names a method file passes to ``@method("...")`` as literals, read from its syntax tree (no code runs):
    the methods whose cases fail when the file fails to import, rather than a usage error."""
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str) and _called(node.func) == "method"):
            names.append(node.args[0].value)
    return [n for n in dict.fromkeys(names) if valid_name(n)]


def _called(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def valid_name(name: object) -> bool:
    """A method name the harness accepts: a short printable word (it reaches test ids, rows and terminals)."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isprintable()
            and not any(c.isspace() for c in name) and "," not in name and "[" not in name and "]" not in name)


def _under(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


# What a discovery child says of each method, in this order (:func:`describe`); everything else is the harness's own.
REPLY_FIELDS = ("name", "module", "baseline", "steps", "regrowth", "pattern", "calibrated")


def accept(target: str, reply: Any) -> tuple[list[MethodInfo], list[str]]:
    """The methods a discovery child's ``reply`` may name for ``target``, and the suites it says the import
    registered. Raises ValueError for a reply that is not what :func:`describe` sends.

    Only names defined in the target itself are taken (in the file, or in the entry point's module and its
    submodules); the origin and source hash are the harness's own; each flag is type-checked."""
    if not isinstance(reply, dict) or not isinstance(reply.get("methods"), list) or not isinstance(reply.get("suites"), list):
        raise ValueError("its reply is not a list of methods")
    kind, _, where = target.partition(":")
    methods = []
    for entry in reply["methods"]:
        if not isinstance(entry, dict) or set(entry) != set(REPLY_FIELDS):
            raise ValueError("its reply describes a method with the wrong fields")
        name, module, baseline, steps, regrowth, pattern, calibrated = (entry[k] for k in REPLY_FIELDS)
        if not valid_name(name) or not isinstance(module, str):
            raise ValueError(f"its reply names a method {printable(repr(name), MAX_NAME_CHARS)}, not a short printable name")
        if any(type(flag) is not bool for flag in (baseline, regrowth, calibrated)) or type(steps) is not int or steps < 1:
            raise ValueError(f"its reply gives method {name!r} flags that are not bools and an int >= 1")
        try:
            if pattern is not None and (not isinstance(pattern, str) or parse_pattern(pattern) is None or steps > 1):
                raise ValueError
        except ValueError:
            raise ValueError(f"its reply gives method {name!r} a pattern that is not N:M of a one-shot method") from None
        if kind == "file" and module == file_module(Path(where)):
            methods.append(MethodInfo(name, target, file_hash(Path(where)), baseline, steps, regrowth, pattern, calibrated))
        elif kind == "module" and _under(module, [where]):
            methods.append(MethodInfo(name, f"module:{module}", module_hash(module), baseline, steps, regrowth, pattern,
                                      calibrated))
        # anything else was registered by a module the target imported: that module's own discovery names it
    suites = [printable(str(s), MAX_NAME_CHARS) for s in reply["suites"][:100]]
    return methods, suites


def precompile(files: Iterable[Path]) -> None:
    """Compile the method files to bytecode now, from the harness: a walled child cannot write
    ``__pycache__``, so without this every child would compile its method from source. Compiling
    runs no code of the file."""
    for path in files:
        try:
            py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)), doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass  # a read-only folder or a syntax error: the child compiles (or reports) it


# -- in a child (or a process that imports methods on purpose) -----------------------------------------

def describe(target: str) -> dict[str, Any]:
    """In a discovery child: import ``target`` (a file or a module) and describe the methods defined there
    (by the module of their function: a module the target imports names its own). A failed import is
    reported in ``error``; it is this child's only target."""
    suites_before = set(SUITES.names())
    try:
        _load(target)
    except Exception as exc:  # noqa: BLE001  (reported, and its methods' cases fail)
        return {"methods": [], "suites": [], "error": f"{type(exc).__name__}: {exc}"}
    kind, _, where = target.partition(":")
    modules = [file_module(Path(where))] if kind == "file" else [where]
    defined = [m for m in (METHODS.get(n) for n in METHODS.names())
               if m.fn.__module__ == modules[0] or kind == "module" and _under(m.fn.__module__, modules)]
    return {"methods": [{"name": m.name, "module": m.fn.__module__, "baseline": m.baseline, "steps": m.steps,
                         "regrowth": m.regrowth, "pattern": m.pattern, "calibrated": m.calibrated} for m in defined],
            "suites": sorted(set(SUITES.names()) - suites_before)}


def _load(origin: str) -> None:
    kind, _, where = origin.partition(":")
    if kind == "module":
        importlib.import_module(where)
    elif kind == "file":
        load_file(Path(where), file_module(Path(where)))


def load_method(info: MethodInfo) -> Method:
    """In a case's child: import the module ``info`` points at (if any) and return the registered method."""
    _load(info.origin)
    if info.name not in METHODS:
        raise LookupError(f"method {info.name!r} is no longer defined where discovery found it ({info.origin})")
    return METHODS.get(info.name)


def find_methods(folders: Iterable[Path]) -> dict[str, Any]:
    """Import installed method packages and the method files in ``folders`` *in this process* (a researcher's own
    tests do: :mod:`pytest_shrinkbench.plugin.testing`); ``{"errors": {where: message}}`` for those that failed."""
    errors: dict[str, str] = {}
    for module in entry_modules():
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001  (one broken package must not hide the others)
            errors[f"module {module}"] = f"{type(exc).__name__}: {exc}"
    found = load_files([f for f in folders if Path(f).is_dir()], namespace=METHOD_FILES_NAMESPACE)
    errors.update({str(path): message for path, message in found.items()})
    return {"errors": errors}
