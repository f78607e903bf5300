"""The node's plain code (fedvida.federation.node and what it loads) never imports Flower.

Flower's quickstarts keep training in a plain ``task.py`` and let the ClientApp convert records;
fedvida's node module is that ``task.py``. Two checks: an import with ``flwr`` made unimportable
(a subprocess, so that this process's Flower modules do not count), and a scan of every fedvida
module the node reaches, including imports inside functions (the node imports torch and the
training code lazily), for an ``import flwr``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fedvida

ROOT = Path(fedvida.__file__).parent
NODE_SIDE = ["fedvida.federation.node", "fedvida.federation.loaders", "fedvida.federation.keys",
             "fedvida.federation.codecs", "fedvida.federation.run_config",
             "fedvida.federation.nodestate"]

BLOCK_FLWR = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "flwr" or name.startswith("flwr."):
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print(sorted(m for m in sys.modules if m == "flwr" or m.startswith("flwr.")))
"""


def _imports(module: str) -> set[str]:
    """Every module ``module``'s source imports, at any depth of its code."""
    path = ROOT.parent / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = path.with_suffix("") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _fedvida_closure(start: list[str]) -> dict[str, set[str]]:
    """fedvida module -> its imports, for every fedvida module reachable from ``start``."""
    seen: dict[str, set[str]] = {}
    todo = list(start)
    while todo:
        name = todo.pop()
        path = ROOT.parent / (name.replace(".", "/") + ".py")
        if name in seen or not (path.is_file() or (path.with_suffix("") / "__init__.py").is_file()):
            continue  # a name imported from a module, not a module itself
        seen[name] = _imports(name)
        todo.extend(m for m in seen[name] if m.startswith("fedvida."))
    return seen


def test_node_modules_import_without_flwr() -> None:
    # Act: import the node side in a fresh interpreter where `import flwr` fails
    out = subprocess.run([sys.executable, "-c", BLOCK_FLWR, *NODE_SIDE],
                         capture_output=True, text=True, timeout=120, check=False)
    # Assert
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_nothing_the_node_reaches_imports_flwr_even_lazily() -> None:
    closure = _fedvida_closure(NODE_SIDE)
    assert "fedvida.training.local" in closure  # the lazy imports are followed
    offenders = {m: sorted(i for i in imps if i == "flwr" or i.startswith("flwr."))
                 for m, imps in closure.items()}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_scan_would_see_a_flower_import() -> None:
    # the check above can fail: the client app itself imports flwr
    app = Path(__file__).parents[2] / "clients" / "client_app.py"
    names = {n.module for n in ast.walk(ast.parse(app.read_text()))
             if isinstance(n, ast.ImportFrom)}
    assert "flwr.clientapp" in names
    out = subprocess.run([sys.executable, "-c", BLOCK_FLWR, "fedvida.federation.records"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "blocked: flwr" in out.stderr
