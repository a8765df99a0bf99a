"""The layout is the architecture, checked: data flows one way through the planes, no
module imports its way into a circle, and importing a module reads no settings."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "fraudlab",
    "data",
    "features",
    "pipelines",
    "serving",
    "client",
    "monitoring",
    "scenarios",
)
# Upstream first. A module may import from its own layer or any layer before it.
LAYERS = (
    (
        "fraudlab.settings",
        "fraudlab.errors",
        "fraudlab.console",
        "fraudlab.locks",
        "fraudlab.redis_client",
    ),  # the foundation
    ("data",),
    ("features",),
    ("pipelines",),
    ("serving",),
    ("client",),  # a client of the API
    ("monitoring",),
    ("scenarios",),
    ("fraudlab.cli", "fraudlab.commands", "fraudlab.stack", "fraudlab.__main__"),  # wiring
)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def layer(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    if module == "fraudlab":
        return 0
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Our modules that `path` imports (every import, or those run at import time)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    ours = modules()
    return {name for name in found if name in ours and name.split(".")[0] in PACKAGES}


def test_no_module_imports_from_a_plane_downstream_of_it() -> None:
    wrong = [
        f"{name} (layer {layer(name)}) imports {imported} (layer {layer(imported)})"
        for name, path in modules().items()
        for imported in sorted(imports(path, top_level_only=False))
        if layer(imported) > layer(name)
    ]
    assert wrong == []


def test_no_import_cycle_among_the_modules() -> None:
    graph = {name: imports(path, top_level_only=True) - {name} for name, path in modules().items()}
    # A package's __init__ is imported with any of its modules: an edge each way is not
    # a cycle of ours, so the package itself is left out as a target.
    graph = {
        name: {t for t in targets if not name.startswith(t + ".")}
        for name, targets in graph.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_importing_every_module_reads_no_settings_and_writes_nothing(tmp_path: Path) -> None:
    """Every module imported with FRAUDLAB_HOME unset, then the home set: settings read
    afterwards see the second home, nothing asked for settings while importing, and the
    working folder is still empty (no `.fraudlab` made by an import)."""
    names = sorted(n for n in modules() if n != "fraudlab.__main__")
    second = tmp_path / "second-home"
    script = textwrap.dedent(
        f"""
        import importlib, os
        os.environ.pop("FRAUDLAB_HOME", None)
        for name in {names!r}:
            importlib.import_module(name)
        from fraudlab.settings import get_settings
        assert get_settings.cache_info().misses == 0, "a module read settings when imported"
        os.environ["FRAUDLAB_HOME"] = {str(second)!r}
        assert str(get_settings().home) == {str(second)!r}, get_settings().home
        print("imported", len({names!r}))
        """
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"imported {len(names)}" in done.stdout
    assert list(cwd.iterdir()) == []


def test_no_module_calls_get_settings_at_module_level() -> None:
    """The same, by reading the code: a call to get_settings outside any function."""
    definitions = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    offenders = [
        name
        for name, path in modules().items()
        for node in ast.parse(path.read_text()).body
        if not isinstance(node, definitions) and "get_settings()" in ast.unparse(node)
    ]
    assert offenders == []


def test_the_command_line_starts_without_the_planes_libraries() -> None:
    """`fraudlab --help` answers at once: the commands import the planes (and their
    pandas, scikit-learn, Feast, MLflow) when they run, not when the CLI starts."""
    script = (
        "import sys, fraudlab.cli\n"
        "heavy = {'pandas', 'sklearn', 'feast', 'mlflow', 'lightgbm', 'evidently'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("entry", ["serving.app", "monitoring.parity", "serving.velocity_state"])
def test_our_processes_load_feast_without_its_type_instrumentation(entry: str) -> None:
    """Feast's @typechecked classes are rewritten at import unless `features` ran first
    (features/__init__.py): 2.4 s of every API start. Each entry here imports Feast
    directly in its own modules, so its package has to import `features` before them."""
    script = (
        f"import {entry}, feast\n"
        "code = feast.FeatureView.__init__.__code__\n"
        "print('check_argument_types_internal' in code.co_names)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_feast_alone_keeps_its_type_instrumentation() -> None:
    """The check above can fail: Feast imported by anything but our packages (its own
    CLI, a user's script) is instrumented as Feast ships it."""
    script = (
        "import feast\n"
        "print('check_argument_types_internal' in feast.FeatureView.__init__.__code__.co_names)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"
