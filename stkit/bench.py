"""``python -m stkit.bench ops|stnet [options]``: the kit's timing scripts under one name.

    python -m stkit.bench ops --shapes A,B --threads 2     # the op against its reference
    python -m stkit.bench stnet --size quick               # an STNet training step

``ops`` is :mod:`stkit.ops.bench` (that module's own ``python -m stkit.ops.bench ops``
is the same command) and ``stnet`` is :mod:`stkit.stnet.bench`; this module only picks
one and passes the remaining options on. Nothing here times anything itself.
"""

from __future__ import annotations

import sys

SCRIPTS = ("ops", "stnet")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] == "ops":
        from .ops.bench import main as ops_main
        return ops_main(argv)
    from .stnet.bench import main as stnet_main
    stnet_main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
