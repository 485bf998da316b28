"""The command line every synthetic-data generator of the kit shares.

    python -m data_prep.synthetic_cxr --out data/cxr --size quick --seed 0 --set n_images=500

``--out`` (created, never overwritten), ``--size`` (a preset), ``--seed`` and repeated
``--set NAME=VALUE`` overrides (a JSON number or list). Each generator module keeps its
own ``main(argv)`` that calls :func:`run` with its generate function; this module knows
nothing about what is generated.
"""

from __future__ import annotations

import argparse
import json


def run(argv, prog: str, description: str, sizes, generate, example: str) -> None:
    """Parse ``argv`` and print the path ``generate(out, size, seed, **overrides)`` returns."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--out", required=True, help="output folder (created; never overwritten)")
    ap.add_argument("--size", default="quick", help=f"one of {sorted(sizes)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=f"override a parameter, e.g. {example}")
    a = ap.parse_args(argv)
    overrides = {}
    for item in a.set:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set expects NAME=VALUE, got {item!r}")
        try:
            overrides[name.strip()] = json.loads(value)
        except ValueError:
            ap.error(f"--set {name}: {value!r} is not a number or a JSON list")
    try:
        print(generate(a.out, a.size, a.seed, **overrides))
    except (ValueError, TypeError, FileExistsError) as e:
        ap.exit(2, f"error: {e}\n")
