"""The README's module map, enforced: imports point one way, and stages never import each other.

Reads every module of ``watcher/`` with ``ast`` (imports under ``if TYPE_CHECKING:`` are for type
hints only and do not count) and checks each import against the layers drawn in the README.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "watcher"

# Top to bottom of the README's drawing; a module may import its own layer and the ones above.
LAYERS = [
    ("errors", "model", "config", "masking", "outputs", "messages", "encoding"),
    ("metrics", "logging", "claim", "inbox", "settle", "models", "faults", "mounts"),
    ("stages",),
    ("pipeline",),
    ("watch", "poll", "scan", "rescans", "worker", "backup", "restore", "cleanup", "scheduler"),
    ("app",),
    ("health", "http", "httpserver", "systemd", "diagnose", "web"),
    ("cli", "__main__"),
]
STAGES = ("validate", "removal", "refine", "compose", "publish")


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The ``watcher`` modules ``path`` imports at run time, as names relative to the package."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                if alias.name.startswith("watcher."):
                    found.add(alias.name.removeprefix("watcher."))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            module = node.module or ""
            if module != "watcher" and not module.startswith("watcher."):
                return
            base = module.removeprefix("watcher").lstrip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}".lstrip(".")
                if full in MODULES:  # `from watcher.stages import compose`: the submodule
                    found.add(full)
                elif base:  # `from watcher.config import Settings`: the module
                    found.add(base)
                # `from watcher import __version__`: the package itself, not a module

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"watcher.{module} is in no layer: add it to the README's map and here")


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "stages" and len(parts) > 1 else None


EDGES = [(m, i) for m, p in MODULES.items() if m for i in sorted(_imports(p))]


def test_the_graph_was_read() -> None:
    assert ("pipeline", "stages.validate") in EDGES and ("cli.daemon", "app") in EDGES


@pytest.mark.parametrize(("module", "imported"), EDGES, ids=[f"{m}->{i}" for m, i in EDGES])
def test_imports_point_down_the_map(module: str, imported: str) -> None:
    assert _layer(imported) <= _layer(module), (
        f"watcher.{module} (layer {_layer(module)}) imports watcher.{imported} "
        f"(layer {_layer(imported)}), which is below it in the README's module map")
    mine, theirs = _stage(module), _stage(imported)
    if mine and theirs:
        assert mine == theirs, f"stages never import each other: {module} imports {imported}"
    if imported == "app":
        assert module.split(".")[0] == "cli", f"only cli imports the App at run time, not {module}"


def _third_party(path: Path) -> set[str]:
    """Top-level packages ``path`` imports at run time, outside ``watcher``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return {name.split(".")[0] for name in names}


def test_the_local_remover_leaves_the_runtimes_to_engines() -> None:
    """LOCAL_RUNTIME's choice lives in removal/runtime.py and the runtimes in removal/engines.py:
    local.py feeds whatever engine it is given, and nothing else imports a runtime."""
    runtimes = {"onnxruntime", "openvino"}
    importers = {name for name, path in MODULES.items() if _third_party(path) & runtimes}
    assert importers == {"stages.removal.engines"}
    assert ("stages.removal.local", "stages.removal.runtime") in EDGES
    assert ("stages.removal.runtime", "stages.removal.engines") in EDGES
