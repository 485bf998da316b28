"""Small helpers every notebook uses: set-up, versions, metrics file, smoke checks."""

from __future__ import annotations

import json
import platform
import random
from pathlib import Path

import numpy as np
import torch

from . import metrics


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
    import matplotlib
    import sklearn
    import torchvision

    import stkit

    info = {
        "python": platform.python_version(),
        "stkit": stkit.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "matplotlib": matplotlib.__version__,
        "threads": torch.get_num_threads(),
    }
    try:
        from stkit import ops

        info["deformable-attention op"] = ops.backend()
    except ImportError as err:  # the op package is optional for the STERN notebooks
        info["deformable-attention op"] = f"unavailable ({err})"
    return info


def print_versions(device: torch.device | None = None) -> None:
    info = versions() | ({"device": str(device)} if device is not None else {})
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}}  {v}")


def write_metrics(out_dir: str | Path, section: str, values: dict) -> Path:
    """Write ``{section: values}`` to ``out_dir/metrics.json`` (the report merges the sections).

    Every key must be declared in ``stkit.metrics`` (its meaning and unit appear in the report).
    """
    metrics.check(section, values)
    path = Path(out_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}  # numpy / 0-d tensors -> Python
    path.write_text(json.dumps({section: clean}, indent=2))
    return path


def check(condition: bool, message: str) -> None:
    """A sanity assertion that survives ``python -O`` and says what failed."""
    if not condition:
        raise AssertionError(f"sanity check failed: {message}")

