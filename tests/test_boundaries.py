"""The rules between genre's layers, as checks: which package may import what, and what a process
that starts often (the `genre` command, a trial's actor) may load when it imports its modules.

Each import check runs in a fresh interpreter, since a module already imported by this test run
would hide what importing another one pulls in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENRE, DATA_PIPELINE = ROOT / "genre", ROOT / "data_pipeline"

# genre's top level holds the contracts that cross processes and the libraries of the commands
# that need no Ray of their own; everything else lives in the folder of the process that runs it.
TOP_LEVEL = {
    "__init__.py",
    "__main__.py",
    "config.py",  # contract: what the CLI builds and every process reads
    "run_folder.py",  # contract: OUT's layout
    "reports.py",  # contract: what workers report and the driver reads
    "predict.py",
    "export.py",
    "evaluate.py",
    "demo.py",
}


def _modules(folder: Path) -> list[str]:
    """The dotted names of the modules under `folder`, packages included."""
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imported_names(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports in functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _first_importer(modules: list[str], forbidden: tuple[str, ...]) -> dict[str, str]:
    """For each forbidden top-level package, the first of `modules` whose import loaded it."""
    script = f"""
import importlib, json, sys
found = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    for package in {forbidden!r}:
        if package in sys.modules and package not in found:
            found[package] = name
print(json.dumps(found))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_data_pipeline_never_imports_genre():
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported_names(path) if n.split(".")[0] == "genre")
        for path in DATA_PIPELINE.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_training_loop_imports_no_ray_anywhere():
    for name in ("fit.py", "windows.py"):
        imported = _imported_names(GENRE / "train" / name)
        assert not {n for n in imported if n.split(".")[0] == "ray"}, name


def test_models_import_no_ray_anywhere():
    offenders = {
        path.name: sorted(n for n in _imported_names(path) if n.split(".")[0] == "ray")
        for path in (GENRE / "models").rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_genre_top_level_holds_only_contracts_and_command_libraries():
    assert {path.name for path in GENRE.glob("*.py")} <= TOP_LEVEL


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # The `genre` process parses arguments before it knows whether it needs torch or Ray:
        # `genre --help` and a refused flag answer at once.
        ("genre/cli", ("torch", "ray")),
        # One actor per trial imports these; torch would cost every trial seconds before it starts.
        ("genre/trial", ("torch",)),
        # The Ray-free loop and what it imports, loaded without Ray.
        ("genre/train/fit.py", ("ray",)),
        ("genre/models", ("ray",)),
    ],
)
def test_a_process_imports_only_what_it_needs(folder, forbidden):
    path = ROOT / folder
    modules = _modules(path) if path.is_dir() else [".".join(path.relative_to(ROOT).with_suffix("").parts)]
    assert _first_importer(modules, forbidden) == {}


def test_the_contracts_import_neither_torch_nor_ray():
    contracts = [
        "genre.config",
        "genre.run_folder",
        "genre.reports",
        "genre.sweep.options",
        "genre.train.setup",
    ]
    assert _first_importer(contracts, ("torch", "ray")) == {}


def test_the_architecture_page_names_every_module_under_its_folder():
    page = (ROOT / "docs" / "architecture.md").read_text()
    sections = {}
    for section in page.split("\n### ")[1:]:
        heading, _, body = section.partition("\n")
        sections[heading.split("`")[1].rstrip("/")] = body
    packages = sorted(path for path in GENRE.iterdir() if (path / "__init__.py").is_file())
    missing = []
    for folder in (DATA_PIPELINE, *packages, GENRE):
        body = sections.get(str(folder.relative_to(ROOT)), "")
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py" and f"- `{path.name}`" not in body:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []
