"""The package's shape is checked, not hoped for: layer contracts (import-linter), no import cycle, no use of another
module's private names, and internal imports at the top of modules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "emoslm"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PAPERS = ("personalization", "dual_info", "echat", "zeroshot")
#: modules allowed to import emoslm inside functions: the CLI keeps start-up fast (``emoslm --help`` must not load
#: torch), and the service's test helper builds a model only when asked
LAZY_OK = {"emoslm.cli", "emoslm.service.testing"}


def _lint_imports(root: Path, src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_layer_contracts_hold():
    proc = _lint_imports(ROOT, ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, imports", [
    ("dual_info/pipeline.py", "import emoslm.echat.api"),     # a paper importing another paper
    ("models/llm.py", "import emoslm.personalization.model"),  # a shared layer importing a paper
    ("data/manifests.py", "import emoslm.models.io"),          # data importing models
    ("errors.py", "import emoslm.service"),                    # anything importing the service
])
def test_a_broken_contract_is_reported(tmp_path, module, imports):
    """The control: the same contracts fail on a copy of the source with one forbidden import added."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "emoslm" / module
    target.write_text(target.read_text() + f"\n{imports}  # injected by the test\n")
    proc = _lint_imports(tmp_path, tmp_path / "src")
    assert proc.returncode != 0 and "BROKEN" in proc.stdout.upper(), proc.stdout[-2000:]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle():
    graph = grimp.build_graph("emoslm", cache_dir=None)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    class Graph:  # a -> b -> c -> a, d alone
        modules = {"a", "b", "c", "d"}
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}

        def find_modules_directly_imported_by(self, m):
            return self.edges[m]

    assert _cycles(Graph()) == [["a", "b", "c"]]


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _private_uses(modules: dict[str, Path]) -> list[str]:
    """``from emoslm.x import _name`` or ``emoslm.x._name`` in a module other than emoslm.x (or its package)."""
    bad = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("emoslm"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        bad.append(f"{name}: from {node.module} import {alias.name}")
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                dotted = []
                while isinstance(base, ast.Attribute):
                    dotted.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id == "emoslm":
                    bad.append(f"{name}: emoslm.{'.'.join(reversed(dotted))}.{node.attr}")
    return bad


def test_no_module_uses_another_modules_private_names():
    assert _private_uses(_modules()) == []


def test_private_name_check_can_fail(tmp_path):
    p = tmp_path / "emoslm" / "m.py"
    p.parent.mkdir()
    p.write_text("from emoslm.report import _md_table\nimport emoslm\nx = emoslm.synth.corpus._voice_pools\n")
    assert len(_private_uses({"emoslm.m": p})) == 2


def _inner_imports(path: Path) -> list[int]:
    """Line numbers of ``emoslm`` imports inside functions."""
    tree = ast.parse(path.read_text())
    lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for n in ast.walk(fn):
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("emoslm"):
                    lines.append(n.lineno)
                elif isinstance(n, ast.Import) and any(a.name.startswith("emoslm") for a in n.names):
                    lines.append(n.lineno)
    return lines


def test_internal_imports_sit_at_the_top_of_modules():
    """Imports inside functions hide the layering; only the CLI (start-up time) may defer emoslm imports."""
    bad = {name: _inner_imports(p) for name, p in _modules().items() if name not in LAZY_OK}
    assert {k: v for k, v in bad.items() if v} == {}


def test_each_paper_is_one_package_with_its_configs():
    for paper in PAPERS:
        pkg = SRC / paper
        assert (pkg / "__init__.py").is_file() and (pkg / "pipeline.py").is_file(), paper
        assert list((pkg / "configs").glob("*.yaml")), f"{paper} ships no config"
