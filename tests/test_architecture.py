"""The package boundaries the design fixes, read from the sources' import statements.

- stkit never imports data_prep: data_prep writes the on-disk formats and may use stkit's
  readers; notebooks and command lines use both.
- No import cycle anywhere in stkit, with imports inside functions counted too (a module
  that imports its own package's ``__init__`` closes one; ``__init__`` re-exporting its
  submodules is fine).
- The layers point one way: ``engine``, ``ops`` and ``data`` import no paper package
  (``stern``, ``stnet``), nothing of ``report`` or ``viz`` and not the command line; the
  two papers import neither each other nor ``report``, ``viz`` or the command line;
  ``viz`` draws and imports neither ``report``, an ``experiment`` module nor the command line.
Each rule is also run on a small package made to break it, so the checks can fail.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (importer prefix, forbidden import prefixes): the layers of stkit
LAYERS = [
    (prefix, ("stkit.stern", "stkit.stnet", "stkit.report", "stkit.viz", "stkit.cli"))
    for prefix in ("stkit.engine", "stkit.ops", "stkit.data")
] + [
    ("stkit.stern", ("stkit.stnet", "stkit.report", "stkit.viz", "stkit.cli")),
    ("stkit.stnet", ("stkit.stern", "stkit.report", "stkit.viz", "stkit.cli")),
    ("stkit.viz", ("stkit.report", "stkit.stern.experiment", "stkit.stnet.experiment", "stkit.cli")),
    ("stkit.report", ("stkit.cli",)),
]


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import statement and importlib/__import__ call with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def test_stkit_sources_never_import_data_prep():
    offenders = [
        f"{p.relative_to(ROOT)}:{line} imports {mod}"
        for p in sorted((ROOT / "stkit").rglob("*.py"))
        for line, mod in _imported_modules(p)
        if mod == "data_prep" or mod.startswith("data_prep.")
    ]
    assert not offenders, "stkit must not import data_prep:\n" + "\n".join(offenders)


def test_the_scanner_sees_every_import_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import data_prep\nfrom data_prep.x import y\nimport importlib\nimportlib.import_module('data_prep.z')\n")
    assert [m for _, m in _imported_modules(probe) if m.startswith("data_prep")] == ["data_prep", "data_prep.x", "data_prep.z"]


def test_importing_every_stkit_module_loads_no_data_prep():
    names = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "stkit").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, json, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'data_prep' or m.startswith('data_prep.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "STKIT_OPS_BACKEND": "reference"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_modules_open_with_a_docstring_and_functions_stay_short():
    """Every stkit module says what it is; no function runs over 60 lines."""
    problems = []
    for p in sorted((ROOT / "stkit").rglob("*.py")):
        text = p.read_text()
        tree = ast.parse(text)
        if not ast.get_docstring(tree):
            problems.append(f"{p.relative_to(ROOT)}: no module docstring")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                problems.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- the import graph
def _modules(root: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package __init__)} of every .py file under root/package."""
    out = {}
    for p in sorted((root / package).rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, relative and absolute, at any depth of the file."""
    mods = _modules(root, package)

    def owner(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {m: set() for m in mods}
    for m, (path, is_pkg) in mods.items():
        here = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) if node.level else node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[m] |= {owner(t) for t in targets if t.split(".")[0] == package and owner(t) not in ("", m)}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as a path m -> ... -> m."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_path(graph, g) for g in groups]


def _cycle_path(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A concrete cycle through the group's first module (breadth-first inside the group)."""
    start, members = group[0], set(group)
    came = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while came[path[-1]] is not None:
                    path.append(came[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
            if w not in came:
                came[w] = v
                queue.append(w)
    return group


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    def under(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return sorted(f"{m} imports {t}" for m, targets in graph.items() for t in targets
                  for importer, banned in layers if under(m, importer) and any(under(t, b) for b in banned))


def test_stkit_has_no_import_cycle():
    cycles = find_cycles(import_graph(ROOT, "stkit"))
    assert not cycles, "import cycles in stkit:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_stkit_layers_point_one_way():
    bad = layer_violations(import_graph(ROOT, "stkit"))
    assert not bad, "imports against the layers (see the module docstring):\n" + "\n".join(bad)


def test_the_graph_sees_every_link_in_the_real_tree():
    graph = import_graph(ROOT, "stkit")
    assert "stkit.engine.trainer" in graph["stkit.stern.task"]  # from ..engine.trainer import ...
    assert "stkit.ops.op" in graph["stkit.ops"]  # a package __init__ re-exporting: an edge down, not a cycle
    assert {"stkit.stern.experiment", "stkit.stnet.experiment"} <= graph["stkit.cli"]  # from .stern import experiment


def test_the_checks_fail_on_a_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "stkit"
    files = {
        "__init__.py": "",
        "engine/__init__.py": "from .trainer import run\n",
        "engine/trainer.py": "def run():\n    from ..stern.task import Task  # upward, and hidden in a function\n",
        "stern/__init__.py": "",
        "stern/task.py": "from stkit.engine import trainer\nclass Task: ...\n",
        "ops/__init__.py": "from .module import M\n",
        "ops/module.py": "from . import M  # reaches back into the package's __init__\nM = 1\n",
        "viz/__init__.py": "",
        "viz/paper.py": "from ..report.compare import rows\n",
        "report/__init__.py": "",
        "report/compare.py": "rows = []\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    graph = import_graph(tmp_path, "stkit")
    assert find_cycles(graph) == [["stkit.engine.trainer", "stkit.stern.task", "stkit.engine.trainer"],
                                  ["stkit.ops", "stkit.ops.module", "stkit.ops"]]
    assert layer_violations(graph) == ["stkit.engine.trainer imports stkit.stern.task", "stkit.viz.paper imports stkit.report.compare"]


def test_no_module_over_350_lines():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sorted((ROOT / "stkit").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 350]
    assert not long, "modules over 350 lines (split them by job):\n" + "\n".join(long)
