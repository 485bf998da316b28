"""``python -m stkit ...``: see :mod:`stkit.cli`."""

from .cli import main

raise SystemExit(main())
