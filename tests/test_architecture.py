"""The package layout's rules, read from the source (docs/ARCHITECTURE.md draws them).

Every import of a project module counts, at module level or inside a function:
  * layers: a module imports only its own layer or the layers below it (LAYERS, lowest
    first; the packages of one row are peers and import nothing from each other);
  * `configs` imports only `configs`, and nothing else in the packages imports `configs`;
  * no import cycles between modules, and no project import inside a function (one hidden
    there is how a cycle or a wrong arrow stays unnoticed).

`python tests/test_architecture.py` prints every broken rule.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_pipelines", "omni_jax", "configs")

# Lowest first. A row's packages are peers: each may import the rows below, not the other.
LAYERS = (
    ("data_pipelines.contract",),
    ("data_pipelines",),
    ("omni_jax.audio",),
    ("omni_jax.models",),
    ("omni_jax.train", "omni_jax.duplex"),
    ("omni_jax.evaluation",),
    ("omni_jax.configuration",),
    ("omni_jax.serving", "omni_jax.benchmarks"),
    ("omni_jax.main", "omni_jax.inspect"),
)


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported project module
    line: int
    in_function: bool

    def __str__(self):
        where = " (inside a function)" if self.in_function else ""
        return f"{self.source}:{self.line} imports {self.target}{where}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES
            for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(name: str, modules) -> str | None:
    """The project module `name` names (a module, or the module holding that name)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in child.names] + [base]
            for name in names:
                if name.split(".")[0] not in PACKAGES:
                    continue
                target = _resolve(name, modules)
                if target and target != module:
                    found.append(Import(module, target, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    # `from a import b` lists both a.b and a: keep the most specific target per line.
    by_line: dict[tuple[int, str], Import] = {}
    for imp in found:
        by_line.setdefault((imp.line, imp.target), imp)
    specific = [i for i in by_line.values()
                if not any(o.line == i.line and o.target.startswith(i.target + ".")
                           for o in by_line.values())]
    return sorted(specific, key=lambda i: (i.line, i.target))


def all_imports() -> list[Import]:
    modules = project_modules()
    return [imp for module, path in modules.items()
            for imp in imports_of(module, path, modules)]


def layer_of(module: str) -> tuple[int, str] | None:
    """(row, package prefix) of the longest LAYERS prefix of `module`."""
    best = None
    for row, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (row, prefix)
    return best


def layer_violations(imports) -> list[str]:
    bad = []
    for imp in imports:
        src_cfg, dst_cfg = imp.source.startswith("configs"), imp.target.startswith("configs")
        if src_cfg or dst_cfg:
            if src_cfg != dst_cfg:
                bad.append(f"{imp}: configs and the packages do not import each other")
            continue
        if imp.source in ("omni_jax", "data_pipelines"):
            bad.append(f"{imp}: a package's __init__ imports nothing")
            continue
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is None or dst is None:
            bad.append(f"{imp}: {imp.source if src is None else imp.target} is in no layer")
        elif dst[0] > src[0] or (dst[0] == src[0] and dst[1] != src[1]):
            bad.append(f"{imp}: {src[1]} sits below (or beside) {dst[1]}")
    return bad


def cycles(imports) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _is_package_parent(imp: Import) -> bool:
    # `from data_pipelines import contract` inside data_pipelines/x.py resolves to the
    # submodule; a bare parent-package target is a re-export, not an arrow.
    return imp.source.startswith(imp.target + ".")


def test_imports_run_down_the_layers():
    assert layer_violations(all_imports()) == []


def test_no_import_cycles():
    edges = [i for i in all_imports() if not _is_package_parent(i)]
    assert cycles(edges) == []


def test_no_project_imports_inside_functions():
    assert [str(i) for i in all_imports() if i.in_function] == []


def test_the_checks_catch_wrong_arrows():
    wrong = [Import("data_pipelines.pipeline", "omni_jax.configuration", 1, False),
             Import("omni_jax.models.omni", "omni_jax.train.trainer", 1, True),
             Import("omni_jax.train.trainer", "omni_jax.duplex.engine", 1, False),
             Import("omni_jax.evaluation.suites", "configs.default", 1, True),
             Import("configs.tiny", "omni_jax.train.optim", 1, False)]
    assert len(layer_violations(wrong)) == len(wrong)
    fine = [Import("omni_jax.train.trainer", "omni_jax.models.omni", 1, False),
            Import("omni_jax.evaluation.suites", "data_pipelines.scenarios", 1, False),
            Import("configs.tiny", "configs.common", 1, False)]
    assert layer_violations(fine) == []
    loop = [Import("a.x", "a.y", 1, False), Import("a.y", "a.z", 1, False),
            Import("a.z", "a.x", 1, False), Import("a.z", "a.w", 1, False)]
    assert cycles(loop) == [["a.x", "a.y", "a.z"]]


def test_every_module_is_in_a_layer():
    assert [m for m in project_modules()
            if not m.startswith("configs") and m not in ("omni_jax", "data_pipelines")
            and layer_of(m) is None] == []


if __name__ == "__main__":
    found = all_imports()
    for line in layer_violations(found):
        print("layer:", line)
    for component in cycles([i for i in found if not _is_package_parent(i)]):
        print("cycle:", " <-> ".join(component))
    for imp in found:
        if imp.in_function:
            print("in function:", imp)
