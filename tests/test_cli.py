"""The one command line (stkit/cli.py): every command the documentation names exists, with its actions."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stkit.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "cuda_ops" / "README.md", ROOT / "data_prep" / "README.md"]


def _documented() -> set[tuple[str, str]]:
    """(command, action or '') of every ``-m stkit CMD [ACTION]`` written in the docs and notebooks."""
    texts = [p.read_text() for p in DOCS] + [p.read_text() for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    found = set()
    for text in texts:
        for cmd, action in re.findall(r"-m stkit ([a-z]+)(?: ([a-z]+))?", text):
            found.add((cmd, action or ""))
    return found


def _choices() -> dict[str, set[str]]:
    """{command: its actions} as the parser offers them."""
    sub = next(a for a in _parser()._actions if a.dest == "command")
    out = {}
    for name, p in sub.choices.items():
        acts = [a for a in p._actions if a.dest in ("action", "what")]
        out[name] = set(acts[0].choices) if acts else set()
    return out


def test_every_documented_command_is_offered():
    documented, offered = _documented(), _choices()
    assert {c for c, _ in documented} >= {"report", "run", "stern", "stnet", "ops", "bench"}  # the docs name them
    missing = sorted(f"{c} {a}".strip() for c, a in documented if c not in offered or (a and offered[c] and a not in offered[c]))
    assert not missing, f"the docs name commands the CLI does not have: {missing}"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "stkit", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for command in _choices():
        assert re.search(rf"^\s+{command}\s", out.stdout, re.M), f"{command} missing from --help"


@pytest.mark.parametrize("args, message", [
    (["stern", "train", "--labels", "x.csv", "--out", "o", "--size", "quick", "--config", "r.yaml"], "either --size or --config"),
    (["stnet", "eval", "--data", "nowhere", "--out", "o"], "BUV folder nowhere not found"),
    (["stern", "train", "--labels", "x.csv", "--out", "o", "--config", "no_such.yaml"], "recipe file no_such.yaml not found"),
])
def test_bad_requests_exit_2_with_one_line(args, message, tmp_path):
    out = subprocess.run([sys.executable, "-m", "stkit", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr[-2000:]
