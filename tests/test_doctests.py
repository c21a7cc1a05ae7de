"""The docstring examples (``>>>``) of every invprob module run as tests, and every module imports cleanly.

This runs under plain ``pytest`` (and so ``make test``) with pyproject's ``testpaths``; it is equivalent to
``pytest --doctest-modules invprob`` with pytest's default ``ELLIPSIS`` option. Modules that need the optional
EIT stack (DOLFINx, gmsh) are skipped where it is not installed.
"""

from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "invprob"
OPTIONAL = frozenset({"dolfinx", "gmsh", "ufl", "basix", "mpi4py", "petsc4py", "pyvista"})


def _modules() -> dict[str, Path]:
    """``{dotted name: file}`` for every module of the package (a package's ``__init__`` is the package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts or path.stem == "__main__":
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()
WITH_EXAMPLES = [name for name, path in MODULES.items() if ">>>" in path.read_text(encoding="utf-8")]


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"{name} needs {exc.name}, which is not installed")
        raise


@pytest.mark.parametrize("name", list(MODULES))
def test_module_imports(name):
    _import(name)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    module = _import(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    failed = attempted = 0
    for test in sorted(finder.find(module, name), key=lambda t: t.name):
        res = runner.run(test, out=out.write)
        failed, attempted = failed + res.failed, attempted + res.attempted
    if failed:
        pytest.fail(f"{failed} of {attempted} docstring example(s) failed in {name}:\n{out.getvalue()}", pytrace=False)
