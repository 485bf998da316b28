"""Run the numbered notebooks headlessly (papermill) and build the HTML report.

Used by ``make report`` (``python -m stkit report``), by the tests (smoke runs) and by
users (``python -m stkit run notebooks/03_....ipynb -p RUN_SIZE quick``).

Why not plain ``papermill``: it only *warns* about a misspelled ``-p`` name and runs the
notebook with the default, so a typo silently changes an experiment. Here every name is
checked against the notebook's ``parameters`` cell first, and nothing is written unless
all names are known. Notebooks run with ``cwd`` set to the notebooks folder, a failing
cell raises :class:`NotebookError` naming the notebook, the cell and the error, and each
executed notebook is converted to HTML. Each notebook writes its key numbers to
``OUT_DIR/metrics.json`` as ``{section: {...}}``; the sections are merged into the
report's ``metrics.json``.
"""

from __future__ import annotations

import ast
import json
import os
import time
from pathlib import Path

import nbformat

from ..engine.recipe import SIZES
from .html import export_html, write_index
from .notebook import versions

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


class NotebookError(RuntimeError):
    """A notebook cell failed, or a notebook was asked for something it does not accept."""


def numbered_notebooks(notebook_dir: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The ``NN_name.ipynb`` notebooks of ``notebook_dir``, in order."""
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {notebook_dir} not found (the notebooks ship with the repository, not the wheel)")
    return sorted(p for p in notebook_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | Path) -> dict[str, object]:
    """Names and default values assigned in the notebook's cell tagged ``parameters``."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise NotebookError(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    params: dict[str, object] = {}
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                try:
                    params[t.id] = ast.literal_eval(node.value)
                except ValueError:
                    params[t.id] = ast.unparse(node.value)
    return params


def check_parameters(path: str | Path, parameters: dict) -> None:
    """Raise :class:`NotebookError` listing any name that the notebook does not declare."""
    known = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise NotebookError(f"{Path(path).name}: unknown parameter(s) {unknown}; the notebook accepts {sorted(known)}")
    if "RUN_SIZE" in parameters and parameters["RUN_SIZE"] not in SIZES:
        raise NotebookError(f"{Path(path).name}: RUN_SIZE must be one of {SIZES}, got {parameters['RUN_SIZE']!r}")


def _kernel_name() -> str:
    """The kernel ``make`` registers (this environment's Python), else the default one."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "stkit" if "stkit" in KernelSpecManager().find_kernel_specs() else "python3"


def relative_paths(parameters: dict, cwd: Path) -> dict:
    """Absolute path values made relative to ``cwd`` (the notebook's folder, where it runs).

    The executed copy shows the parameters papermill injected; relative paths keep the
    machine's folder layout out of pages that get shared.
    """
    out = {}
    for name, value in parameters.items():
        if isinstance(value, (str, Path)) and os.path.isabs(value):
            value = os.path.relpath(value, cwd)
        out[name] = value
    return out


def run_notebook(path: str | Path, output: str | Path, parameters: dict | None = None, html_output: bool = True, log_output: bool = False) -> Path:
    """Execute one notebook with papermill; returns the executed copy's path.

    Raises :class:`NotebookError` for an unknown parameter (before writing anything) or
    a failing cell (the executed copy, with the traceback, is kept at ``output``).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    path, output = Path(path).resolve(), Path(output).resolve()
    parameters = relative_paths(dict(parameters or {}), path.parent)
    check_parameters(path, parameters)
    if output.parent == path.parent:
        raise NotebookError(f"refusing to write the executed copy into the notebooks' own folder ({output}); choose another --out")
    output.parent.mkdir(parents=True, exist_ok=True)
    saved_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the kernel inherits it: no progress bars in executed copies
    try:
        pm.execute_notebook(
            str(path), str(output), parameters=parameters, cwd=str(path.parent), kernel_name=_kernel_name(), progress_bar=False, log_output=log_output
        )
    except PapermillExecutionError as err:
        raise NotebookError(
            f"{path.name} failed in cell {err.exec_count} with {err.ename}: {err.evalue}\n"
            f"  the executed copy with the full traceback is {output}"
        ) from None
    finally:
        if saved_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_tqdm
        if html_output and output.exists():
            export_html(output)
    return output


def run_all(
    size: str = "quick",
    out_root: str | Path = "reports",
    notebooks: list[str | Path] | None = None,
    extra: dict | None = None,
    data_dir: str | Path = DATA_DIR,
    log_output: bool = False,
) -> dict:
    """Run notebooks in order at ``size`` and write ``out_root/{index.html, metrics.json}``.

    ``extra`` parameters go to every notebook that declares them; a name that no notebook
    declares is an error, raised before anything runs. Returns the merged metrics.
    """
    if size not in SIZES:
        raise NotebookError(f"size must be one of {SIZES}, got {size!r}")
    paths = [Path(p).resolve() for p in notebooks] if notebooks else numbered_notebooks()
    if not paths:
        raise NotebookError("no notebooks to run")
    out_root = Path(out_root).resolve()
    extra = dict(extra or {})
    declared = {p: notebook_parameters(p) for p in paths}
    orphan = sorted(n for n in extra if not any(n in d for d in declared.values()))
    if orphan:
        raise NotebookError(f"unknown parameter(s) {orphan}: no notebook among {[p.name for p in paths]} declares them")
    plans = []
    for p in paths:
        common = {"RUN_SIZE": size, "OUT_DIR": str(out_root / p.stem), "DATA_DIR": str(Path(data_dir).resolve()), "INTERACTIVE": False}
        params = {k: v for k, v in (common | extra).items() if k in declared[p]}
        check_parameters(p, params)
        plans.append((p, params))

    metrics: dict = {"report": {"size": size, "seconds": {}, "notebooks": [], "environment": versions()}}
    status = []
    for p, params in plans:
        t0 = time.perf_counter()
        executed = out_root / f"{p.stem}.ipynb"
        stale = Path(params.get("OUT_DIR", out_root / p.stem)) / "metrics.json"
        stale.unlink(missing_ok=True)  # an earlier run's numbers must not pass for this run's
        print(f"running {p.name} (size {size}) ...", flush=True)
        try:
            run_notebook(p, executed, params, log_output=log_output)
        except NotebookError as err:
            status.append((p, executed, time.perf_counter() - t0, str(err)))
            write_index(out_root, metrics, status)
            raise
        seconds = time.perf_counter() - t0
        status.append((p, executed, seconds, None))
        metrics["report"]["seconds"][p.stem] = round(seconds, 1)
        metrics["report"]["notebooks"].append(p.stem)
        nb_metrics = Path(params.get("OUT_DIR", out_root / p.stem)) / "metrics.json"
        if nb_metrics.exists():
            for section, values in json.loads(nb_metrics.read_text()).items():
                if section in metrics and section != "report":
                    raise NotebookError(f"{p.name} writes metrics section {section!r}, which an earlier notebook wrote too")
                metrics[section] = values
        print(f"  done in {seconds:.0f} s", flush=True)
    write_index(out_root, metrics, status)
    return metrics
