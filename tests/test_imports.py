"""lpray's import structure: every module imports on its own, and nothing imports in a circle.

A cycle hidden behind a function-level import works until someone moves that import to the top
of its module, and then fails only for whoever imports one side first; a module that works only
after another was imported fails only in a fresh worker process. These tests find both before a
user does. The graphs are read from the source (``ast``), so they cost well under a second.

The package layers (``lpray.<name>``, a subpackage or a top-level module) must form a DAG with
function-level imports counted too: that is what keeps the data flow in ``lpray/__init__.py``
true. Imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import lpray

PACKAGE = Path(lpray.__file__).resolve().parent


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> source file, for every module under ``package`` (a folder)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = [package.name, *path.relative_to(package).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(name: str, path: Path, *, functions: bool) -> Iterable[str]:
    """Names imported by one module: ``pkg.mod`` and, for ``from pkg.mod import x``, ``pkg.mod.x``
    too (``x`` may be a submodule). Function bodies are read only when ``functions`` is set."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(nodes: list[ast.stmt]) -> Iterable[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                yield from visit(node.orelse)
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not functions:
                continue
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                yield module
                yield from (f"{module}.{alias.name}" for alias in node.names)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from visit([child])
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    yield from visit(child.body)

    yield from visit(ast.parse(path.read_text()).body)


def import_graph(package: Path, *, functions: bool) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports (a name resolves to its longest module
    prefix: ``from lpray.io.tables import arrays_to_table`` is an edge to ``lpray.io.tables``)."""
    modules = module_files(package)

    def resolve(imported: str) -> str | None:
        while imported and imported not in modules:
            imported = imported.rpartition(".")[0]
        return imported or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported in imported_names(name, path, functions=functions):
            target = resolve(imported)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def layer_graph(package: Path) -> dict[str, set[str]]:
    """The same graph, function-level imports included, with every module replaced by its layer
    ``<package>.<first name>``; the root package itself (only ``__version__``) is left out."""
    root = package.name

    def layer(module: str) -> str:
        return ".".join(module.split(".")[:2])

    layers: dict[str, set[str]] = {}
    for source, targets in import_graph(package, functions=True).items():
        if source == root:
            continue
        edges = layers.setdefault(layer(source), set())
        edges.update(layer(t) for t in targets if t != root and layer(t) != layer(source))
    return layers


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None for a DAG (iterative DFS, sorted for stable
    messages)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A scratch package ``pkg`` under ``root`` with the given module sources."""
    for relative, text in files.items():
        path = root / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_module_imports_have_no_cycle() -> None:
    cycle = find_cycle(import_graph(PACKAGE, functions=False))
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle or [])


def test_layers_have_no_cycle() -> None:
    cycle = find_cycle(layer_graph(PACKAGE))
    assert cycle is None, (
        "the lpray layers import each other in a circle (function-level imports included): "
        + " -> ".join(cycle or [])
        + "; move the shared piece down to a layer both can import"
    )


def test_cycle_checks_catch_cycles(tmp_path: Path) -> None:
    """The checks above can fail: a module-level cycle, and a cycle between two layers hidden
    behind a function-level import, relative import and TYPE_CHECKING block included."""
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": "from .b import thing\n",
            "low/b.py": "from pkg.low import a\nthing = 1\n",
            "high/__init__.py": "",
            "high/c.py": "from pkg.low.a import thing\n",
            "low/d.py": "def late():\n    from pkg.high.c import thing\n",
            "low/e.py": "if TYPE_CHECKING:\n    from pkg.high import c\n",
            "low/f.py": "try:\n    pass\nexcept ImportError:\n    from ..high import c\n",
        },
    )
    assert find_cycle(import_graph(package, functions=False)) == [
        "pkg.low.a",
        "pkg.low.b",
        "pkg.low.a",
    ]
    assert import_graph(package, functions=False)["pkg.low.d"] == set()
    assert import_graph(package, functions=False)["pkg.low.e"] == set()
    assert import_graph(package, functions=False)["pkg.low.f"] == {"pkg.high", "pkg.high.c"}
    assert find_cycle(layer_graph(package)) == ["pkg.high", "pkg.low", "pkg.high"]
    for hidden in ("d.py", "f.py"):  # the two low -> high imports
        (package / "low" / hidden).write_text("")
    assert find_cycle(layer_graph(package)) is None


# Imports every module named on the command line in the same interpreter, each after removing
# the package's modules from sys.modules, so each is imported alone as in a fresh process (only
# the third-party modules stay loaded: re-importing torch per module would take minutes).
# Prints {module: error} as JSON.
IMPORT_EACH = """
import importlib, json, sys, traceback
root, names = sys.argv[1], sys.argv[2:]
errors = {}
for name in names:
    for loaded in [m for m in sys.modules if m == root or m.startswith(root + ".")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        errors[name] = traceback.format_exc(limit=-3)
print(json.dumps(errors))
"""


def import_each_alone(package: Path) -> dict[str, str]:
    # __main__ runs the CLI when imported (python -m lpray), so it is not imported here.
    names = [name for name in module_files(package) if not name.endswith(".__main__")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package.parent), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, package.name, *names],
        capture_output=True,
        text=True,
        env=env,
        cwd=package.parent,
        timeout=600,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_module_imports_alone() -> None:
    errors = import_each_alone(PACKAGE)
    assert not errors, "\n\n".join(f"import {name} alone:\n{err}" for name, err in errors.items())


def test_import_each_alone_catches_order_dependence(tmp_path: Path) -> None:
    """The check above can fail: ``b`` uses ``pkg.a`` without importing it, which works only
    when something imported ``pkg.a`` first."""
    package = write_package(
        tmp_path,
        {"__init__.py": "", "a.py": "X = 1\n", "b.py": "import pkg\nY = pkg.a.X\n"},
    )
    errors = import_each_alone(package)
    assert list(errors) == ["pkg.b"], errors
    assert "AttributeError" in errors["pkg.b"]


# What a command's driver process imports before its work starts: the config, the CLI, and the
# `lpray track` driver (which starts Ray, then hands the networks to worker processes) need no
# torch. Importing it there cost the track command seconds before Ray could start (torch ~4.6 s
# on a cold page cache on the GPU machine). The backbone and model-type registries are names
# only, so the config's full check runs there too.
TORCH_FREE = [
    "lpray.cli",
    "lpray.config",
    "lpray.pipeline",
    "lpray.track.corpus",
    "lpray.losses",
    "lpray.models.backbones",
    "lpray.models.model_types",
]
# the full config check (every registry's names, the backbone's weights) and the driver's
# view-group lookup from a saved model config, as `lpray track` runs them; run without the
# sys.modules guard (scipy, which the synthetic project reader imports, probes
# sys.modules["torch"] and breaks on the guard's None) and checked after the fact
CHECKS = """
import sys
from pathlib import Path
from lpray.config import config_from_dict, load_config, save_config
from lpray.io.layout import ModelDir
from lpray.track.corpus import model_view_groups
cfg = config_from_dict({"model": {"backbone": "vit_small_dino", "model_type": "context",
    "pretrained": True}, "data": {"view_groups": [["a", "b"]]}})
folder = Path(sys.argv[1])
save_config(cfg, ModelDir(folder).config)
assert load_config(ModelDir(folder).config).model.backbone == "vit_small_dino"
assert model_view_groups(folder) == [["a", "b"]], model_view_groups(folder)
assert "torch" not in sys.modules, "torch was imported"
"""


def test_the_config_and_the_track_driver_import_no_torch(tmp_path) -> None:
    code = "import sys; sys.modules['torch'] = None\n" + "".join(
        f"import {name}\n" for name in TORCH_FREE
    )
    checked = subprocess.run(
        [sys.executable, "-c", CHECKS, str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # and the guard works: a module that needs torch fails the same way
    needs = subprocess.run(
        [sys.executable, "-c", code + "import lpray.inference.network\n"],
        capture_output=True,
        text=True,
    )
    assert needs.returncode != 0 and "torch" in needs.stderr
