"""The documentation tells the truth about the repository: its commands, links, names and tables.

README.md is the front door (short, with the commands CI runs); docs/ holds the reference. Every
relative link leads somewhere, every ``pytest_shrinkbench.x.y`` name imports, and the tables that
restate the code (the row's fields, the package tree, who imports whom) are checked against it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PACKAGE = ROOT / "pytest_shrinkbench"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
DOTTED = re.compile(r"\bpytest_shrinkbench(?:\.[A-Za-z_]\w*)+")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text without fenced code blocks or inline code: links there are examples, not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _code_blocks(text: str) -> list[str]:
    return [block.group(0).split("\n", 1)[1].rsplit("\n", 1)[0].strip() for block in FENCE.finditer(text)]


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets ``-1``, ``-2``, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        slug = github_anchor(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _ci_commands() -> list[str]:
    """The commands .ci/run runs, one per line, without comments and failure handling (``|| ...``)."""
    commands = []
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            commands.append(line.split("||", 1)[0].strip())
    return commands


def test_the_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"


def test_the_readmes_install_and_test_commands_are_what_ci_runs() -> None:
    ci = _ci_commands()
    install = next(c for c in ci if c.startswith("pip install"))
    test = next(c for c in ci if shlex.split(c)[0] == "pytest")
    blocks = _code_blocks(README.read_text())
    # The quick start: one line that installs, then runs the main job.
    assert blocks[0].split("&&")[0].strip() == install, f"README's first command must install as CI does: {install!r}"
    assert shlex.split(blocks[0].split("&&")[1])[0] == "pytest"
    assert test in blocks, f"README must show the test command CI runs, alone in a code block: {test!r}"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {_rel(linked)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


def _resolves(name: str) -> bool:
    """Whether a dotted name is a module, or an attribute reached from the longest module prefix.

    A module is found without being run (``pytest_shrinkbench.__main__`` would run the command line).
    """
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module = ".".join(parts[:split])
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # a prefix is a module, not a package
            found = False
        if not found:
            continue
        if split == len(parts):
            return True
        obj = importlib.import_module(module)
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def _entry_point_groups() -> set[str]:
    """Entry-point group names look like module names but are not: the code declares them."""
    from pytest_shrinkbench.sandbox import methods
    from pytest_shrinkbench.suites import user

    return {methods.ENTRY_POINT_GROUP, user.ENTRY_POINT_GROUP}


def test_every_dotted_name_in_the_docs_and_docstrings_imports_or_resolves() -> None:
    sources = PAGES + sorted((ROOT / "methods").glob("*.py")) + sorted(PACKAGE.rglob("*.py"))
    groups = _entry_point_groups()
    unresolved = sorted(
        f"{_rel(source)}: {name}"
        for source in sources
        for name in set(DOTTED.findall(source.read_text()))
        if name not in groups and not _resolves(name)
    )
    assert not unresolved, "names of modules or objects that do not exist (moved?): " + "; ".join(unresolved)


def test_every_path_into_the_package_or_the_tests_the_docs_name_exists() -> None:
    """``pytest_shrinkbench/...``, ``tests/...``, ``docs/...`` and ``.ci/...`` in inline code. (``methods/`` and
    ``benchmarks/`` also name folders of a user's project, as in ``methods/mine.py``: links check those.)"""
    missing = []
    for page in PAGES:
        for code in INLINE_CODE.findall(FENCE.sub("", page.read_text())):
            path = code[1].strip()
            ours = re.fullmatch(r"(pytest_shrinkbench|tests|docs|\.ci)/[\w./-]*", path) and not any(c in path for c in "<*")
            if ours and not (ROOT / path).exists():
                missing.append(f"{_rel(page)}: {path}")
    assert not missing, "paths that do not exist: " + "; ".join(missing)


def _between(text: str, name: str) -> str:
    begin, end = f"<!-- {name}: begin -->\n", f"\n<!-- {name}: end -->"
    assert begin in text and end in text, f"markers {begin.strip()} ... {end.strip()} are missing"
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_the_row_fields_table_is_the_declared_schema() -> None:
    from pytest_shrinkbench.results.schema import markdown_table

    table = _between((DOCS / "results.md").read_text(), "row fields")
    assert table == markdown_table(), (
        "docs/results.md is stale: paste the output of "
        "`python -c 'from pytest_shrinkbench.results.schema import markdown_table; print(markdown_table())'`"
    )


def test_the_metrics_table_is_the_declared_one() -> None:
    from pytest_shrinkbench.metrics import markdown_table

    table = _between((DOCS / "results.md").read_text(), "metrics")
    assert table == markdown_table(), (
        "docs/results.md is stale: paste the output of "
        "`python -c 'from pytest_shrinkbench.metrics import markdown_table; print(markdown_table())'`"
    )


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_design_pages_tree_names_every_module() -> None:
    tree = next(block for block in _code_blocks((DOCS / "design.md").read_text()) if block.startswith("pytest_shrinkbench/"))
    folders: list[str] = []
    listed = set()
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if not words:
            continue
        level = indent // 2
        folders = folders[:level]
        if words[0].endswith("/"):
            folders.append(words[0].rstrip("/"))
        elif words[0].endswith(".py"):
            listed.add("/".join([*folders, words[0]]))
    modules = {str(p.relative_to(ROOT)) for p in _modules()}
    packages = {str(p.relative_to(ROOT)) for p in _modules() if p.name == "__init__.py" and p.parent != PACKAGE}
    missing = sorted(modules - listed - packages)  # a sub-package's __init__ is its folder's line
    assert not missing, f"docs/design.md's package tree lacks {missing}"
    assert not sorted(listed - modules), f"docs/design.md's package tree names modules that do not exist: {sorted(listed - modules)}"


def _part(path: Path) -> str:
    """The unit of the import table a module belongs to: its sub-package, or the top-level module's name."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_parts(path: Path) -> set[str]:
    """The parts of the package a module imports, lazy imports included."""
    here = list(path.relative_to(PACKAGE).parent.parts)
    targets: list[list[str]] = []  # dotted names inside the package, as parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "pytest_shrinkbench"]
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "pytest_shrinkbench"):
            if node.level:  # relative: from the module's own folder, up level - 1 folders
                base = here[: len(here) - node.level + 1] + (node.module.split(".") if node.module else [])
            else:
                base = node.module.split(".")[1:]
            targets += [[*base, a.name] for a in node.names]
    # A top-level name is a part when it is a module or sub-package; otherwise it is the package's own API.
    return {t[0] if (PACKAGE / t[0]).is_dir() or (PACKAGE / f"{t[0]}.py").is_file() else "__init__" for t in targets}


def test_every_import_follows_the_design_pages_layering() -> None:
    table = _between((DOCS / "design.md").read_text(), "imports")
    allowed: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        allowed[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1] if len(cells) > 1 else ""))
    broken = []
    for path in _modules():
        part = _part(path)
        if part not in allowed:
            broken.append(f"{_rel(path)}: its part {part!r} is not in the table")
            continue
        for imported in sorted(_imported_parts(path) - {part} - allowed[part]):
            broken.append(f"{_rel(path)} imports {imported}")
    assert not broken, "imports outside docs/design.md's table: " + "; ".join(broken)
