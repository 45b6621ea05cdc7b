"""The layers point one way: `workers` imports only `app.core` and `app.sources`, `app.sources`
only `app.core`, and `app.core` nothing else of the project. Every import counts, including
those inside functions (they hide a dependency, they do not remove it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("app", "workers")

# layer (a package path) -> the project packages it may import, itself included
ALLOWED = {
    "workers": ("workers", "app.core", "app.sources"),
    "app.sources": ("app.sources", "app.core"),
    "app.core": ("app.core",),
}

# what the worker side must never load: the web framework and the admin API's OpenAPI builder
WEB_ONLY = ("flask", "werkzeug", "apispec")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this project (so ``from app import web`` is
    read as an import of ``app.web``, not of ``app``)."""
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every project module ``path`` imports, with its line, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """The project imports of ``source``, a module of ``package`` (for relative imports)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if is_module(sub) else base))
    return [(line, target) for line, target in found if target.split(".")[0] in PROJECT]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def layer_files(layer: str) -> list[Path]:
    folder = ROOT.joinpath(*layer.split("."))
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def violations(layer: str) -> list[str]:
    allowed = ALLOWED[layer]
    bad = set()
    for path in layer_files(layer):
        for line, target in imports_of(path):
            if not any(within(target, package) for package in allowed):
                bad.add(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return sorted(bad)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer):
    assert layer_files(layer), f"no modules found under {layer}"
    assert violations(layer) == []


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    """The rule test would pass vacuously if the walker missed these forms."""
    source = "def f():\n    from app.web import receive\n    from .. import admin\n    import workers.ops\n"
    found = {target for _, target in imports_in(source, "app.core")}
    assert found == {"app.web.receive", "app.admin", "workers.ops"}


@pytest.mark.parametrize("module", ["workers.converter", "workers.process"])
def test_worker_modules_do_not_load_the_web_side(module):
    code = (
        f"import json, sys, {module}\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert module in loaded
    assert [m for m in loaded if m.split(".")[0] in WEB_ONLY] == []
    web_side = ("app.web", "app.admin", "app.cli", "app.console")
    assert [m for m in loaded if any(within(m, package) for package in web_side)] == []
