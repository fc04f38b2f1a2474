"""Name → object registries for methods and suites, filled by decorators.

Registration is idempotent for the same source (a module may be imported twice, once as a
package and once from its file), and a clash between two different sources is an error:
silently replacing a method would put someone else's numbers under its name.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


def origin_of(fn: object) -> str:
    """Where a function was defined: file and qualified name, resolved so two imports compare equal."""
    try:
        source = str(Path(inspect.getsourcefile(fn) or "?").resolve())  # type: ignore[arg-type]
    except TypeError:
        source = "?"
    return f"{source}:{getattr(fn, '__qualname__', repr(fn))}"


@dataclass
class Registry(Generic[T]):
    """Registered objects by name, with where each came from."""

    kind: str
    _items: dict[str, T] = field(default_factory=dict)
    _origins: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, obj: T, origin: str) -> T:
        """Register ``obj``; the same origin again keeps the first registration (its module stays the owner)."""
        known = self._origins.get(name)
        if known is not None and known != origin:
            raise ValueError(f"{self.kind} {name!r} is registered twice: by {known} and by {origin}")
        if known is not None:
            return self._items[name]
        self._items[name] = obj
        self._origins[name] = origin
        return obj

    def replace(self, name: str, obj: T) -> None:
        """Swap the object registered as ``name`` (keeping its origin); the name must be registered."""
        self.get(name)
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def retain(self, keep: Callable[[T], bool]) -> None:
        """Forget every entry for which ``keep`` is false."""
        for name in [n for n, obj in self._items.items() if not keep(obj)]:
            del self._items[name], self._origins[name]


def load_entry_points(group: str) -> list[str]:
    """Import every module an installed package lists under ``group`` (importing registers); return their names."""
    modules = []
    for entry in importlib.metadata.entry_points(group=group):
        entry.load()
        modules.append(entry.module)
    return modules


def load_file(path: Path, module_name: str) -> None:
    """Import one ``*.py`` file by path as ``module_name`` (importing registers what it defines)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def load_files(folders: Iterable[Path], namespace: str) -> dict[Path, str]:
    """Import each ``*.py`` (not ``_*.py``) in ``folders`` by path, in sorted order.

    Files are loaded by path, not as a package, so a researcher's ``methods/`` folder needs no
    ``__init__.py`` and never shadows an installed module. A file that fails to import does not
    stop the others: its error is returned (path → message) for the caller to report.
    """
    errors: dict[Path, str] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                load_file(path, f"{namespace}.{Path(folder).resolve().name}.{path.stem}")
            except Exception as exc:
                errors[path] = f"{type(exc).__name__}: {exc}"
    return errors
