"""A wheel is a working kit: it carries the op's C++/CUDA sources and builds the compiled op.

Builds a wheel of this checkout, installs it into a fresh virtual environment that borrows
the already-installed dependencies (torch is not downloaded twice), imports it from
outside the checkout and asks which op backend runs. Slow (one compile of the CPU op).
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("ms_deform_attn_cpu.cpp", "ms_deform_attn_cuda.cu", "ms_deform_attn.h", "bindings.cpp")


def _run(cmd, **kw):
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT])
    [whl] = dist.glob("stkit-*.whl")
    return whl


def test_wheel_contains_the_recipes_and_the_report_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = sorted(p.name for p in (ROOT / "stkit" / "recipes").iterdir() if p.suffix in (".yaml", ".sbatch"))
    missing = [r for r in recipes if f"stkit/recipes/{r}" not in names]
    assert len(recipes) == 7 and not missing, f"{wheel.name} lacks recipes {missing}"
    assert "stkit/report/templates/stkit_html/index.html.j2" in names and "stkit/report/catalog.tsv" in names


def test_wheel_contains_the_op_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [s for s in SOURCES if f"stkit/ops/csrc/{s}" not in names]
    assert not missing, f"{wheel.name} lacks {missing}"
    for s in SOURCES:  # the packaged files are the repository's, byte for byte
        assert zipfile.ZipFile(wheel).read(f"stkit/ops/csrc/{s}") == (ROOT / "cuda_ops" / s).read_bytes()


@pytest.mark.skipif(os.environ.get("STKIT_OPS_BACKEND") == "reference", reason="STKIT_OPS_BACKEND=reference")
def test_installed_wheel_builds_the_compiled_op(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel])
    # Borrow this environment's packages (torch, numpy, ...) without their .pth hooks, so the
    # editable install of the checkout stays invisible and `stkit` comes from the wheel.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "STKIT_OPS_BACKEND": "compiled", "STKIT_OPS_BUILD_DIR": str(tmp_path / "build")}
    env.pop("PYTHONPATH", None)
    code = "import stkit, stkit.ops as o; print(stkit.__file__); print(o.backend())"
    where, backend = _run([py, "-c", code], cwd=tmp_path, env=env).strip().splitlines()[-2:]
    assert Path(where).is_relative_to(venv), f"stkit imported from {where}, not from the wheel"
    assert backend.startswith("compiled"), backend
