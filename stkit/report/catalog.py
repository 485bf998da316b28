"""The names of every number the notebooks report, with meaning and unit: defined once.

Each notebook writes ``{section: {key: value}}`` to ``OUT_DIR/metrics.json`` through
``stkit.report.notebook.write_metrics``, which refuses a key not declared here; the report's index
page, ``stkit.report.papers`` (which run number sits beside which paper number) and the tests
read the same table. A key may be a pattern (``speedup_fwd_*``) for per-shape numbers.

The declarations are a table, ``catalog.tsv`` beside this module (section, key, unit,
required, chance level, the baseline to beat, meaning); this module reads and looks them
up. It holds names and descriptions only; it computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path


@dataclass(frozen=True)
class Metric:
    key: str  # name in metrics.json (may contain * for a family of keys)
    meaning: str  # one line a student can read
    unit: str = ""  # "AUC", "fraction", "s", "x", "px", "AP" ... ("" for counts and labels)
    required: bool = False  # every run of the notebook must write it
    chance: float | None = None  # the value a model that learned nothing gets (flagged in the report)
    compare_to: str | None = None  # key of the baseline this number should beat (flagged when it does not)


TABLE = Path(__file__).resolve().parent / "catalog.tsv"  # the declarations, one row per number
_COLUMNS = ["section", "key", "unit", "required", "chance", "compare_to", "meaning"]


def _read(path: Path = TABLE) -> dict[str, dict[str, Metric]]:
    """{section: {key: Metric}} from the tab-separated table; a malformed row is an error naming its line."""
    rows = [(n, line.rstrip("\n").split("\t")) for n, line in enumerate(path.read_text().splitlines(True), 1)
            if line.strip() and not line.startswith("#")]
    if not rows or rows[0][1] != _COLUMNS:
        raise ValueError(f"{path}: the header must be {_COLUMNS}")
    out: dict[str, dict[str, Metric]] = {}
    for n, cells in rows[1:]:
        if len(cells) != len(_COLUMNS) or cells[3] not in ("yes", "no"):
            raise ValueError(f"{path}:{n}: expected {len(_COLUMNS)} tab-separated fields with required yes/no, got {cells}")
        section, key, unit, req, chance, compare_to, meaning = (None if c == "-" else c for c in cells)
        if key in out.setdefault(section, {}):
            raise ValueError(f"{path}:{n}: {section}.{key} is declared twice")
        out[section][key] = Metric(key, meaning, unit or "", req == "yes", None if chance is None else float(chance), compare_to)
    return out


SECTIONS: dict[str, dict[str, Metric]] = _read()


def find(section: str, key: str) -> Metric:
    """The declaration of ``key`` in ``section``; KeyError naming what is declared."""
    table = SECTIONS.get(section)
    if table is None:
        raise KeyError(f"unknown metrics section {section!r}; declared: {sorted(SECTIONS)} (stkit/report/catalog.tsv)")
    if key in table:
        return table[key]
    for pattern, metric in table.items():
        if "*" in pattern and fnmatchcase(key, pattern):
            return metric
    raise KeyError(f"metric {section}.{key} is not declared in stkit/report/catalog.tsv; declared: {sorted(table)}")


def required(section: str) -> set[str]:
    """Keys every run of the section's notebook must write."""
    return {k for k, m in SECTIONS[section].items() if m.required}


def check(section: str, values: dict) -> None:
    """Raise KeyError for an undeclared key or a missing required one."""
    for key in values:
        find(section, key)
    missing = required(section) - set(values)
    if missing:
        raise KeyError(f"metrics section {section!r} lacks required key(s) {sorted(missing)}")
