"""The user guide (docs/) builds with Sphinx, warnings as errors, as `make docs` does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run sphinx-build as `make docs` does, quietly, in a fresh output folder."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", source, out],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_user_guide_builds_without_a_warning(tmp_path: Path) -> None:
    # Given the docs folder as committed
    # When it is built with warnings as errors
    done = sphinx_build(DOCS, tmp_path / "html")
    # Then nothing warned, and the pages and the API reference are there
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    api = (tmp_path / "html" / "api.html").read_text("utf-8")
    assert 'id="missive.Processor"' in api
    assert 'id="missive.dlq.sqlite.SQLiteDLQ"' in api
    for page in ("index", "quickstart", "cli", "dlq", "routing", "console"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    # The design records (sketches, not runnable examples) are not part of the guide
    assert not (tmp_path / "html" / "design").exists()


def a_site(tmp_path: Path, page: str) -> Path:
    """A one-page site using the guide's conf.py, in tmp_path/docs."""
    source = tmp_path / "docs"
    source.mkdir()
    shutil.copy(DOCS / "conf.py", source / "conf.py")
    (source / "index.md").write_text(page, "utf-8")
    return source


def test_a_link_to_a_missing_page_fails_the_build(tmp_path: Path) -> None:
    # Given a page whose link names no page of the site
    source = a_site(tmp_path, "# Home\n\nSee [the figures](figures.md).\n")
    # When it is built
    done = sphinx_build(source, tmp_path / "html")
    # Then the build fails and says which link
    assert done.returncode != 0
    assert "figures" in done.stderr


def test_a_link_to_a_file_outside_docs_becomes_a_download(tmp_path: Path) -> None:
    # Given a page linking to a Markdown file beside docs/, and to one of its sections
    source = a_site(
        tmp_path,
        "# Home\n\nSee [the figures](../bench/README.md#replay) and [the code](../app.py).\n",
    )
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "README.md").write_text("# Bench\n\n## Replay\n", "utf-8")
    (tmp_path / "app.py").write_text("print('hi')\n", "utf-8")
    # When it is built
    done = sphinx_build(source, tmp_path / "html")
    # Then nothing warned; the site ships a copy of each file and keeps the section's name
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "html" / "index.html").read_text("utf-8")
    assert html.count('href="_downloads/') == 2, html
    assert "(section #replay)" in html
    assert len(list((tmp_path / "html" / "_downloads").glob("*/README.md"))) == 1
