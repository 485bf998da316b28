"""``python -m data_prep COMMAND ...``: the data commands in one place.

Each command is a module of this package with its own ``main(argv)`` and ``--help``;
this file only maps command names to modules. It is the command line of the data layer:
``stkit`` itself never imports ``data_prep`` (the arrow points one way).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "synthetic-cxr": ("data_prep.synthetic_cxr", "generate the built-in synthetic chest X-rays"),
    "convert-cxr": ("data_prep.cxr_datasets", "convert CheXpert / ChestX-ray14 / VinDr-CXR labels to the kit's CSV"),
    "synthetic-buv": ("data_prep.synthetic_buv", "generate the built-in synthetic breast-ultrasound videos (BUV format)"),
    "prepare-buv": ("data_prep.buv", "check a BUV download, apply the errata, write cleaned JSONs"),
    "prepare-cxr-images": ("data_prep.prepare_images", "DICOM/PNG/JPEG of a kit label CSV -> PNGs of one size, boxes scaled"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "usage: python -m data_prep COMMAND [--help | options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
