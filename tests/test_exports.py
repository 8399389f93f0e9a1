"""Packages meet only through their ``__init__`` exports, as trio's do.

Each package's ``__init__`` curates its API in ``__all__``; a module of
another package importing one of its private modules (``_x.py``) at run time
reaches past that door, and the private module can no longer be changed
without reading the whole tree.  Imports under ``if TYPE_CHECKING:`` are type
hints, not doors.  A private module of the importer's own package or of an
enclosing one (``migd._version`` from ``migd.sweep``) is its own house, as
``trio._util`` is for ``trio._core``.  Parsed with ``ast``, nothing imported.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

import migd

ROOT = Path(__file__).resolve().parent.parent
MIGD = ROOT / "migd"
#: The command frame: the one place that writes errors and progress to stderr.
FRAME = {MIGD / "cli.py", MIGD / "_args.py"}
#: Issue 21's target: at most this many writes to stderr outside the frame.
MAX_STDERR_WRITES = 3


def modules() -> list[Path]:
    return sorted(p for p in MIGD.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> tuple[str, ...]:
    """``migd/bench/_rig.py`` -> ("migd", "bench", "_rig"); a package is its ``__init__``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def package_of(path: Path) -> tuple[str, ...]:
    return path.relative_to(ROOT).parent.parts


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def runtime_nodes(tree: ast.AST):
    """Every node outside ``if TYPE_CHECKING:`` bodies (their ``else`` runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, tree: ast.AST):
    """(line, dotted module) for each runtime import of a migd module, the
    names of ``from PKG import _mod`` included when ``_mod`` is a module."""
    pkg = package_of(path)
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, tuple(alias.name.split("."))
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else ()
            target = base + tuple(node.module.split(".") if node.module else ())
            yield node.lineno, target
            for alias in node.names:
                sub = ROOT.joinpath(*target, alias.name)
                if sub.with_suffix(".py").exists() or sub.is_dir():
                    yield node.lineno, target + (alias.name,)


def private_doors(path: Path, text: str | None = None) -> list[str]:
    """``file:line: module`` for each runtime import of another package's private
    module in ``path`` (or in ``text``, as if it were that file)."""
    found = []
    pkg = package_of(path)
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    for line, target in imported_modules(path, tree):
        if target[:1] != ("migd",):
            continue
        for i, part in enumerate(target[1:], 1):
            if is_private(part):
                owner = target[:i]
                if pkg[:len(owner)] != owner:  # neither its package nor an enclosing one
                    found.append(f"{path.relative_to(ROOT)}:{line}: {'.'.join(target)}")
                break
    return found


def test_no_package_imports_another_package_s_private_module():
    doors = sorted(d for p in modules() for d in private_doors(p))
    assert doors == [], "import these through the package's __init__:\n" + "\n".join(doors)


def test_the_rule_sees_each_form_of_private_import():
    """The check itself: each way of reaching a private module is flagged,
    type hints and a package's own modules are not."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "from ..mm._copy import memcpy\n"
        "from migd.mm._page import PAGE_SIZE\n"
        "import migd.daemon._config\n"
        "from ..daemon import _system\n"
        "from ._parse import read_traces\n"
        "from .._version import migd_version\n"
        "from ..mm import Machine\n"
        "if TYPE_CHECKING:\n"
        "    from ..sweep._run import SweepResult\n"
        "def f():\n"
        "    from ..bench._rig import Rig\n")
    lines = sorted((d.split(":")[1] for d in private_doors(MIGD / "replay" / "_probe.py", text)),
                   key=int)
    assert lines == ["2", "3", "4", "5", "12"]


def packages() -> list[str]:
    """Every subpackage (the top package exports nothing: its modules are the commands)."""
    return [".".join(dotted(p)) for p in modules()
            if p.name == "__init__.py" and p.parent != MIGD]


@pytest.mark.parametrize("name", packages())
def test_each_package_curates_its_exports_and_every_one_exists(name):
    pkg = importlib.import_module(name)
    exported = pkg.__all__
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(pkg, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"
    assert all(not is_private(n) for n in exported), name


def stderr_writes(path: Path) -> list[str]:
    """Each use of ``sys.stderr`` (a print to it or a write) in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "stderr"
            and isinstance(node.value, ast.Name) and node.value.id == "sys"]


def test_errors_reach_stderr_through_the_command_frame():
    """One place prints the one-line errors and exit statuses of every
    command; a module printing its own would drift from it."""
    writes = [w for p in modules() if p not in FRAME for w in stderr_writes(p)]
    assert len(writes) <= MAX_STDERR_WRITES, writes
    assert stderr_writes(MIGD / "cli.py"), "the frame itself writes to stderr"


def test_the_engine_and_its_surfaces_name_no_concrete_migrator():
    """A migrator is its module and its catalogue entry: the engine, the DMA
    layer, the daemon and the metrics reach it only through the Migrator
    interface and the catalogue, so none of them names one, in code or text."""
    root = Path(migd.__file__).parent
    named = [f"{path.relative_to(root)}:{n}" for pkg in ("migrate", "dma", "daemon", "metrics")
             for path in sorted((root / pkg).glob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\b(dcbm|mtcopy)\b", line, re.I)]
    assert named == []
