"""The layers, enforced: lsp -> completion -> model, each importing only from the layers after it; tools apart.

Read from the source (imports under `if TYPE_CHECKING:` are annotations, not imports), so a new import that
crosses a layer fails here with the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dglsp"
PROTOCOL = {"pygls", "lsprotocol"}
TENSORS = {"torch", "transformers", "tokenizers", "safetensors", "accelerate", "httpx", "huggingface_hub"}
# What each serving layer may not import (third-party top-level names, and dglsp subpackages).
FORBIDDEN = {
    "lsp": TENSORS | {"dglsp.tools"},
    "completion": PROTOCOL | TENSORS | {"dglsp.lsp", "dglsp.tools"},
    "model": PROTOCOL | {"dglsp.lsp", "dglsp.completion", "dglsp.tools"},
    "shared": PROTOCOL | TENSORS | {"dglsp.lsp", "dglsp.completion", "dglsp.model", "dglsp.tools"},
}


def layer_of(path: Path) -> str | None:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        return "shared" if relative.stem in ("config", "errors") else None  # cli.py and __main__ dispatch to all
    return relative.parts[0] if relative.parts[0] in FORBIDDEN else None


def imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import outside `if TYPE_CHECKING:` blocks."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.append((child.lineno, child.module))
            visit(child)

    visit(tree)
    return found


def crossings(path: Path) -> list[str]:
    layer = layer_of(path)
    if layer is None:
        return []
    bad = []
    for line, module in imports(ast.parse(path.read_text(), str(path))):
        for forbidden in FORBIDDEN[layer]:
            if module == forbidden or module.startswith(forbidden + "."):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer}) imports {module}")
    return bad


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_crosses_its_layer(path):
    assert crossings(path) == []


def test_the_rule_catches_a_crossing(tmp_path, monkeypatch):
    package = tmp_path / "dglsp"
    (package / "completion").mkdir(parents=True)
    bad = package / "completion" / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\nimport pygls.workspace\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", package)
    assert crossings(bad) == ["dglsp/completion/bad.py:4 (completion) imports pygls.workspace"]


def test_serving_never_loads_the_tools():
    import subprocess
    import sys

    code = ("import sys, dglsp.cli, dglsp.lsp.server; dglsp.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith('dglsp.tools.') and m != 'dglsp.tools.options'))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
