"""The package boundaries the design fixes: stkit never imports data_prep.

data_prep writes the on-disk formats and may use stkit's readers; notebooks and command
lines use both. A cycle between the two installed packages would make stkit unusable
without the data layer, and hide which one owns a format.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
    """Every stkit module says what it is; a function over 60 lines carries a '# long:' reason."""
    problems = []
    for p in sorted((ROOT / "stkit").rglob("*.py")):
        text = p.read_text()
        tree = ast.parse(text)
        if not ast.get_docstring(tree):
            problems.append(f"{p.relative_to(ROOT)}: no module docstring")
        lines = text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                body = "\n".join(lines[node.lineno - 1:node.end_lineno])
                if "# long:" not in body:
                    problems.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines")
    assert not problems, "\n".join(problems)
