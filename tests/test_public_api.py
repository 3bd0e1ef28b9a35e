"""The public surface: one __all__ (ruff keeps it sorted); a core of the standard library."""

import subprocess
import sys

import missive


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(missive).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert set(missive.__all__) == public | {"__version__"}


def test_matcher_is_the_abc_and_matcher_func_the_callable_alias() -> None:
    import missive.matchers
    import missive.processor

    assert missive.Matcher is missive.matchers.Matcher
    assert "MatcherFunc" in missive.__all__
    # The old import path of the callable alias keeps working.
    assert missive.processor.Matcher is missive.MatcherFunc


def test_every_error_derives_from_missive_error() -> None:
    errors = [getattr(missive, name) for name in missive.__all__ if name.endswith("Error")]
    assert errors
    assert all(issubclass(error, missive.MissiveError) for error in errors)


def test_importing_the_core_loads_only_the_standard_library() -> None:
    program = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import missive, missive.adapters.stdin, missive.dlq.sqlite, missive.testing\n"
        "third = sorted({m.split('.')[0] for m in set(sys.modules) - before}"
        " - set(sys.stdlib_module_names) - {'missive'})\n"
        "print(','.join(third))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
