"""environment.yml (conda users) and constraints.txt (make / pip) describe one environment."""

import re
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_pins_match_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env_text = (ROOT / "environment.yml").read_text()
    env = _pins(env_text.splitlines())
    assert env, "environment.yml pins nothing"
    mismatched = {n: (v, constraints.get(n)) for n, v in env.items() if constraints.get(n) != v}
    assert not mismatched, f"environment.yml pins differ from constraints.txt (yml, constraints): {mismatched}"
    assert re.search(r"^\s*-\s*python=3\.11\s*$", env_text, re.M), "environment.yml must ask for python 3.11"
    assert re.search(r"^\s*-\s*-e \.(\[test\])?\s*$", env_text, re.M), "environment.yml must install the package itself"


def test_every_dependency_is_pinned_in_both():
    # The installed package's metadata is pyproject.toml's dependency list (no TOML parser
    # needed, so this runs on every Python the package supports).
    deps = requires("stkit") or []
    names = {_requirement_name(d) for d in deps}
    assert {"torch", "pytest"} <= names, f"stkit's metadata lists {sorted(names)}"
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert not names - set(constraints), f"dependencies without a pin in constraints.txt: {sorted(names - set(constraints))}"
    assert not names - set(env), f"dependencies missing from environment.yml: {sorted(names - set(env))}"
