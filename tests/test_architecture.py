"""Architecture guards, checked on the source text (AST), not by importing the checked modules.

- every function or method in ``invprob/`` has at most 80 lines after its docstring (argparse builders in
  ``invprob/apps/`` excepted, see :func:`is_argparse_builder`);
- ``invprob/apps/`` holds no numerics: no module there imports torch (at top level or inside a function), and no
  loop there runs over a solver's iteration count (see :func:`iteration_loops`);
- nothing in ``tests/``, ``benchmarks/`` or ``examples/`` imports a private name or module of invprob, or reaches
  one by attribute access or by a dotted string (``monkeypatch.setattr("invprob.x._y", ...)``);
- the import graph of invprob (every import, inside functions too, relative ones resolved) has no cycle and no
  edge from a lower layer to a higher one (:data:`LAYERS`).

Each checker is a plain function over a source tree and is itself tested on small synthetic trees, so that a guard
provably fails when its rule is broken.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "invprob"
MAX_LINES = 80

# Layer of each module, by longest dotted prefix; imports may only point down or sideways.
LAYERS: dict[str, int] = {
    "invprob._checks": 0,
    "invprob.linalg": 0,
    "invprob.devices": 0,
    "invprob.results": 0,
    "invprob.calibration": 0,
    "invprob.data": 0,  # package data only (calibration tables), no code
    "invprob.operators": 1,
    "invprob.priors": 1,
    "invprob.potential": 2,
    "invprob.bnn": 2,
    "invprob.posterior": 2,
    "invprob.eit_posterior": 2,
    "invprob.solvers": 3,
    "invprob.tuning": 3,
    "invprob.apps": 4,
}
ROOT_LAYER = 0  # the package ``__init__`` itself: imported by everything, may re-export from any layer below apps
ROOT_MAY_IMPORT_BELOW = 4

PARSER_CALLS = frozenset({
    "add_argument", "add_parser", "add_subparsers", "add_argument_group", "add_mutually_exclusive_group",
    "set_defaults",
})
ITERATION_NAMES = re.compile(r"^((\w+_)?(n_iter|max_iter)|iters?|map_iters|n_steps|steps|burn_in|n_burn|n_outer"
                             r"|n_inner)$")


# -- source tree -------------------------------------------------------------------------------------------
def module_name(path: Path, package: Path) -> str:
    """Dotted module name of ``path`` inside ``package`` (a package's ``__init__`` is the package itself)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: Path) -> dict[str, Path]:
    """Every module of ``package`` (folders without ``__init__.py`` count as namespace packages)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        out[module_name(path, package)] = path
    return out


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# -- (a) function length -----------------------------------------------------------------------------------
def body_length(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line (0 for a bare docstring)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return node.end_lineno - body[0].lineno + 1


def _is_parser_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PARSER_CALLS


def is_argparse_builder(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """An argparse builder: named ``build_parser``, ``add_parser``, ``add_*_parser`` or ``_add_*``, and at least
    half of its simple statements (expressions, assignments, returns; nested definitions not counted) contain an
    ``add_argument``/``add_parser``/``add_subparsers``/``add_argument_group``/``set_defaults`` call."""
    name = node.name
    if not (name in ("build_parser", "add_parser") or re.fullmatch(r"add_\w+_parser", name)
            or name.startswith("_add_")):
        return False
    simple = (ast.Expr, ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Return)
    stmts = []

    def collect(stmts_in):
        for st in stmts_in:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(st, simple):
                stmts.append(st)
            for field in ("body", "orelse", "finalbody"):
                collect(getattr(st, field, []) or [])
            for handler in getattr(st, "handlers", []) or []:
                collect(handler.body)

    collect(node.body[1:] if ast.get_docstring(node) is not None else node.body)
    if not stmts:
        return False
    n_parser = sum(any(_is_parser_call(n) for n in ast.walk(st)) for st in stmts)
    return 2 * n_parser >= len(stmts)


def long_functions(package: Path, limit: int = MAX_LINES) -> list[str]:
    """``file:line name (N lines)`` for every function or method longer than ``limit`` (builders in apps/ aside)."""
    offenders = []
    for name, path in modules(package).items():
        in_apps = name.split(".")[1:2] == ["apps"]
        for node in ast.walk(parse(path)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n = body_length(node)
            if n > limit and not (in_apps and is_argparse_builder(node)):
                offenders.append(f"{rel(path, package.parent)}:{node.lineno} {node.name} ({n} lines)")
    return offenders


# -- (b) no numerics in apps/ ------------------------------------------------------------------------------
def _type_checking_only(tree: ast.AST) -> set[int]:
    """``id`` of every node under an ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) block."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for st in node.body:
                out.update(id(n) for n in ast.walk(st))
    return out


def imported_modules(tree: ast.AST, *, type_checking: bool = True) -> Iterator[tuple[int, str, int]]:
    """``(lineno, dotted name, level)`` for every import in ``tree``: ``import a.b`` yields ``a.b``; ``from a import
    b`` yields ``a.b`` (the longest existing module of it is the target: ``a.b`` if a module, else ``a``).
    ``type_checking=False`` leaves out the imports under ``if TYPE_CHECKING:`` (they never run)."""
    skip = set() if type_checking else _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, 0
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                name = base if alias.name == "*" else (f"{base}.{alias.name}" if base else alias.name)
                yield node.lineno, name, node.level


def torch_imports(package: Path) -> list[str]:
    """``file:line module`` for every import of torch in ``<package>/apps``."""
    offenders = []
    for name, path in modules(package).items():
        if name.split(".")[1:2] != ["apps"]:
            continue
        for lineno, mod, level in imported_modules(parse(path)):
            if level == 0 and (mod == "torch" or mod.startswith("torch.")):
                offenders.append(f"{rel(path, package.parent)}:{lineno} imports {mod}")
    return sorted(set(offenders))


def _names(node: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.arg):
            out.add(n.arg)
    return out


def iteration_loops(package: Path) -> list[str]:
    """``file:line`` for every loop in ``<package>/apps`` that runs over a solver's iteration count: a ``for`` over
    ``range(...)`` whose arguments name an iteration count (``n_iter``, ``max_iter``, ``map_max_iter``,
    ``kernel_n_iter``, ``iters``, ``steps``, ``n_steps``, ``burn_in``, ...), or a ``while`` whose condition names
    one."""
    offenders = []
    for name, path in modules(package).items():
        if name.split(".")[1:2] != ["apps"]:
            continue
        for node in ast.walk(parse(path)):
            probe = None
            if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and isinstance(node.iter.func, ast.Name) \
                    and node.iter.func.id == "range":
                probe = node.iter
            elif isinstance(node, ast.While):
                probe = node.test
            if probe is not None and any(ITERATION_NAMES.match(n) for n in _names(probe)):
                offenders.append(f"{rel(path, package.parent)}:{node.lineno} loop over an iteration count")
    return offenders


# -- (c) no private invprob names outside the package ------------------------------------------------------
def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


DOTTED = re.compile(r"^invprob(\.[A-Za-z_]\w*)+$")


def private_uses(files: list[Path], base: Path, root: str = "invprob") -> list[str]:
    """``file:line what`` for every private invprob name a client file reaches.

    Flags ``from invprob.x import _y``, ``import invprob._x`` / ``from invprob._x import y`` (private module),
    ``invprob.x._y`` attribute chains on a name bound by ``import invprob...`` or ``from invprob... import m``, and
    dotted string literals such as ``"invprob.x._y"`` (``monkeypatch.setattr`` targets). Dunders are public.
    """
    offenders = []
    for path in files:
        tree = parse(path)
        bound: set[str] = set()
        where = rel(path, base)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] != root:
                        continue
                    if any(_private(p) for p in parts):
                        offenders.append(f"{where}:{node.lineno} imports private module {alias.name}")
                    bound.add(alias.asname or parts[0])
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] == root:
                if any(_private(p) for p in node.module.split(".")):
                    offenders.append(f"{where}:{node.lineno} imports from private module {node.module}")
                for alias in node.names:
                    if _private(alias.name):
                        offenders.append(f"{where}:{node.lineno} imports private name {node.module}.{alias.name}")
                    bound.add(alias.asname or alias.name)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value) \
                    and node.value.split(".")[0] == root and any(_private(p) for p in node.value.split(".")):
                offenders.append(f"{where}:{node.lineno} names private {node.value!r}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain, cur = [], node
            while isinstance(cur, ast.Attribute):
                chain.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in bound and _private(chain[0]):
                offenders.append(f"{where}:{node.lineno} accesses private {cur.id}.{'.'.join(reversed(chain))}")
    return sorted(set(offenders))


def client_files(root: Path = ROOT) -> list[Path]:
    """The Python files of tests/, benchmarks/ and examples/ (this guard aside: it names modules, it uses none)."""
    return [p for d in ("tests", "benchmarks", "examples") for p in sorted((root / d).rglob("*.py"))
            if "__pycache__" not in p.parts and p.resolve() != Path(__file__).resolve()]


# -- (d) import graph --------------------------------------------------------------------------------------
def _resolve(mod: str, level: int, importer: str, is_package: bool) -> str:
    if level == 0:
        return mod
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([mod] if mod else []))


def import_graph(package: Path, *, type_checking: bool = True) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over the modules of ``package``.

    Every ``import`` and ``from ... import`` counts, inside functions too, and inside ``if TYPE_CHECKING:`` blocks
    unless ``type_checking=False``; a relative import is resolved against the importer; the target is the longest
    existing module path of what is imported (``from a import b`` targets ``a.b`` when that is a module, else
    ``a``). The implicit imports of parent packages are not edges.
    """
    mods = modules(package)
    root = package.name
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for lineno, mod, level in imported_modules(parse(path), type_checking=type_checking):
            full = _resolve(mod, level, name, is_pkg)
            if full.split(".")[0] != root:
                continue
            parts = full.split(".")
            target = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in mods),
                          None)
            if target is not None and target != name:
                graph[name].setdefault(target, lineno)
    return graph


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    if "." not in module:
        return ROOT_LAYER
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        if ".".join(parts[:k]) in layers:
            return layers[".".join(parts[:k])]
    return None


def layer_violations(graph: dict[str, dict[str, int]], layers: dict[str, int] = LAYERS) -> list[str]:
    """Modules with no layer, and every edge pointing to a higher layer (the root package may import below apps)."""
    out = [f"{m}: no layer assigned" for m in graph if layer_of(m, layers) is None]
    for src, targets in graph.items():
        ls = layer_of(src, layers)
        if ls is None:
            continue
        if "." not in src:
            ls = ROOT_MAY_IMPORT_BELOW - 1
        for dst, lineno in targets.items():
            ld = layer_of(dst, layers)
            if ld is not None and ld > ls:
                out.append(f"{src} (layer {layer_of(src, layers)}) imports {dst} (layer {ld}) at line {lineno}")
    return sorted(out)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_path(graph: dict[str, dict[str, int]], comp: list[str]) -> str:
    """One concrete cycle through the first module of ``comp``, as ``a -> b -> a`` (for the failure message)."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    frontier, seen = [start], {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph.get(v, {}):
                if w == start:
                    path, cur = [start], v
                    while cur != start:
                        path.append(cur)
                        cur = prev[cur]
                    return " -> ".join([start, *reversed(path[1:]), start])
                if w in members and w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return " <-> ".join(comp)


# -- the guards on the real tree ---------------------------------------------------------------------------
def _fail(title: str, items: list[str]) -> None:
    if items:
        pytest.fail(f"{title} ({len(items)}):\n  " + "\n  ".join(items), pytrace=False)


def test_no_long_functions():
    _fail(f"functions longer than {MAX_LINES} lines (docstring not counted)", long_functions(PACKAGE))


def test_apps_do_not_import_torch():
    _fail("torch imported in invprob/apps (numerics belong in the library)", torch_imports(PACKAGE))


def test_apps_run_no_solver_loops():
    _fail("loops over an iteration count in invprob/apps (solver loops belong in the library)",
          iteration_loops(PACKAGE))


def test_clients_use_public_names_only():
    _fail("private invprob names used in tests/, benchmarks/, examples/", private_uses(client_files(), ROOT))


def test_import_graph_has_no_cycle():
    # imports that run (a type-only import under ``if TYPE_CHECKING:`` cannot make an import cycle; it still
    # counts for the layers below)
    graph = import_graph(PACKAGE, type_checking=False)
    _fail("import cycles in invprob", [cycle_path(graph, c) for c in cycles(graph)])


def test_imports_point_down_the_layers():
    _fail("imports pointing up the layers (or modules with no layer)", layer_violations(import_graph(PACKAGE)))


# -- the checkers can fail ---------------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path / "invprob"


def test_checker_finds_a_long_function(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(81))
    short_body = "\n".join(f"    x{i} = {i}" for i in range(80))
    doc = '    """' + "\n".join(["doc"] * 50) + '"""\n'
    pkg = _tree(tmp_path, {
        "invprob/__init__.py": "",
        "invprob/mod.py": f"def too_long():\n{long_body}\n\ndef fits():\n{doc}{short_body}\n\n"
                          f"class C:\n    def method(self):\n{textwrap.indent(long_body, '    ')}\n",
        "invprob/apps/__init__.py": "",
        "invprob/apps/cli.py": "def build_parser(p):\n" + "\n".join(f"    p.add_argument('--a{i}')"
                                                                        for i in range(90)) + "\n"
                               f"def _add_things(p):\n{long_body}\n",
    })
    found = long_functions(pkg)
    assert any("mod.py:1 too_long (81 lines)" in f for f in found), found
    assert any(" method (81 lines)" in f for f in found), found
    assert any("_add_things" in f for f in found), found  # the name alone does not exempt a function
    assert not any("fits" in f or "build_parser" in f for f in found), found


def test_checker_finds_torch_and_solver_loops_in_apps(tmp_path):
    pkg = _tree(tmp_path, {
        "invprob/__init__.py": "",
        "invprob/ops.py": "import torch\n",
        "invprob/apps/__init__.py": "",
        "invprob/apps/run.py": """\
            import numpy as np

            def run(args):
                from torch.nn import functional as F
                for k in range(args.n_iter):
                    pass
                for f in range(3):
                    pass
                while it < max_iter:
                    pass
            """,
    })
    assert torch_imports(pkg) == ["invprob/apps/run.py:4 imports torch.nn.functional"]
    assert iteration_loops(pkg) == ["invprob/apps/run.py:5 loop over an iteration count",
                                    "invprob/apps/run.py:9 loop over an iteration count"]


def test_checker_finds_private_uses(tmp_path):
    (tmp_path / "t.py").write_text(textwrap.dedent("""\
        import invprob
        import invprob._checks
        import invprob.apps.deblur as deblur
        from invprob.apps.eit_recon import _make_prior, build_prior
        from invprob import __version__
        from invprob.solvers import samplers
        x = invprob.posterior._private_helper
        y = deblur._free_preconditioner
        z = samplers.PBRWP
        monkeypatch.setattr("invprob.apps.deblur._fista_batch", None)
        other._private = 1
        """))
    found = private_uses([tmp_path / "t.py"], tmp_path)
    assert found == [
        "t.py:10 names private 'invprob.apps.deblur._fista_batch'",
        "t.py:2 imports private module invprob._checks",
        "t.py:4 imports private name invprob.apps.eit_recon._make_prior",
        "t.py:7 accesses private invprob.posterior._private_helper",
        "t.py:8 accesses private deblur._free_preconditioner",
    ], found


def test_checker_finds_cycles_and_upward_edges(tmp_path):
    pkg = _tree(tmp_path, {
        "invprob/__init__.py": "from invprob.posterior import Posterior\nfrom invprob.apps import cli\n",
        "invprob/linalg.py": "",
        "invprob/posterior.py": "from .operators.blur import Blur\n",
        "invprob/operators/__init__.py": "from .blur import Blur\n",
        "invprob/operators/blur.py": "from .. import linalg\n\ndef f():\n    from invprob.solvers.map import g\n",
        "invprob/solvers/__init__.py": "",
        "invprob/solvers/map.py": "import invprob.operators.blur\n",
        "invprob/apps/__init__.py": "",
        "invprob/apps/cli.py": "from invprob.solvers import map\n",
        "invprob/newroom/__init__.py": "",
        "invprob/priors/__init__.py": "from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from invprob import apps\n",
    })
    graph = import_graph(pkg)
    assert graph["invprob.operators.blur"] == {"invprob.linalg": 1, "invprob.solvers.map": 4}
    assert graph["invprob.apps.cli"] == {"invprob.solvers.map": 1}  # `from pkg import module` targets the module
    assert cycles(graph) == [["invprob.operators.blur", "invprob.solvers.map"]]
    assert cycle_path(graph, cycles(graph)[0]) == "invprob.operators.blur -> invprob.solvers.map -> " \
                                                  "invprob.operators.blur"
    assert layer_violations(graph) == [
        "invprob (layer 0) imports invprob.apps.cli (layer 4) at line 2",
        "invprob.newroom: no layer assigned",
        "invprob.operators.blur (layer 1) imports invprob.solvers.map (layer 3) at line 4",
        "invprob.priors (layer 1) imports invprob.apps (layer 4) at line 3",  # type-only imports count for layers
    ]
    assert "invprob.apps" not in import_graph(pkg, type_checking=False)["invprob.priors"]


def test_relative_imports_resolve():
    assert _resolve("base", 1, "invprob.solvers.samplers.pbrwp", False) == "invprob.solvers.samplers.base"
    assert _resolve("pbrwp", 1, "invprob.solvers.samplers", True) == "invprob.solvers.samplers.pbrwp"
    assert _resolve("map", 2, "invprob.solvers.samplers.pbrwp", False) == "invprob.solvers.map"
    assert _resolve("", 2, "invprob.operators.eit.cem", False) == "invprob.operators"
