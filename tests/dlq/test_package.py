"""The missive.dlq package: light to import, with the public names it lists."""

from __future__ import annotations

import subprocess
import sys
import types

import missive.dlq


def test_importing_the_package_loads_no_database_driver() -> None:
    code = "import sys, missive.dlq; print(sorted({'sqlite3', 'psycopg'} & set(sys.modules)))"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.stdout.strip() == "[]", result.stderr


def test_all_lists_the_public_names() -> None:
    public = {
        name
        for name, value in vars(missive.dlq).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert sorted(missive.dlq.__all__) == sorted(public)
