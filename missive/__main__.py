"""``python -m missive``: the ``missive`` command."""

from missive.cli import main

raise SystemExit(main())
