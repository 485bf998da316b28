"""Small helpers every notebook uses: set-up, versions, metrics file, sanity checks.

    device = notebook.setup(SEED, OUT_DIR, DEVICE)          # seeds, folder, version print
    notebook.write_metrics(OUT_DIR, "stern", {...})          # keys declared in stkit.report.catalog
    notebook.check(auc > 0.5, "STERN learned nothing")      # fails loudly, also under python -O

Not here: running notebooks (``stkit.report.runner``) and the report pages (``stkit.report.html``).
"""

from __future__ import annotations

import platform
import random
from pathlib import Path

import matplotlib
import numpy as np
import sklearn
import torch
import torchvision

from .. import __version__
from ..engine.checkpoint import write_json
from ..ops import backend
from . import catalog


def setup(seed: int = 0, out_dir: str | Path | None = None, device: str = "cpu") -> torch.device:
    """Seed Python, NumPy and PyTorch, create ``out_dir``, check the device, print versions."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE={device!r} but torch sees no CUDA device; use DEVICE='cpu'")
    print_versions(dev)
    return dev


def versions() -> dict:
    """Versions of the kit's main packages and the deformable-attention op backend."""
    return {
        "python": platform.python_version(),
        "stkit": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "threads": torch.get_num_threads(),
        "deformable-attention op": backend(),
    }


def print_versions(device: torch.device | None = None) -> None:
    info = versions() | ({"device": str(device)} if device is not None else {})
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")


def write_metrics(out_dir: str | Path, section: str, values: dict) -> Path:
    """Write ``{section: values}`` to ``out_dir/metrics.json`` (the report merges the sections).

    Every key must be declared in ``stkit.report.catalog`` (its meaning and unit appear in the report).
    """
    catalog.check(section, values)
    clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}  # numpy / 0-d tensors -> Python
    return write_json(Path(out_dir) / "metrics.json", {section: clean}, indent=2)


def check(condition: bool, message: str) -> None:
    """A sanity assertion that survives ``python -O`` and says what failed."""
    if not condition:
        raise AssertionError(f"sanity check failed: {message}")

