"""Sphinx configuration of the Missive user guide (``make docs``).

The pages are the Markdown files beside this one (read by myst-parser), the
``quickstart.rst`` and ``api.rst``, whose reference autodoc builds from
the docstrings. ``make docs`` and ``tests/test_docs_build.py`` build with
warnings as errors, so a broken link or reference fails the tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

import missive  # noqa: E402  (after the path, so a source tree builds without an install)

project = "Missive"
author = "The Missive developers"
copyright = "The Missive developers"
release = missive.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# design/ holds the developers' design records (sketches, not runnable examples).
exclude_patterns = ["_build", "design", "Thumbs.db", ".DS_Store"]

# Links such as ``cli.md#probes-metrics-and-logs`` name a heading by its slug, as
# GitHub does; myst makes these anchors for headings down to this level.
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]

html_theme = "furo"
html_title = f"Missive {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}


def _outside_links_to_downloads(app: Any, doctree: Any) -> None:
    """Turn Markdown links to pages outside ``docs/`` into download links.

    A page may link to ``../bench/README.md``: on GitHub that opens the file, but
    myst reads any ``.md`` target as a page of the site and warns that it has no
    such page. The site ships a copy of the file instead, and keeps a
    ``#section`` part of the link as text after it. Runs before Sphinx collects
    the downloads of a page (the priority), so the copy is made.
    """
    from docutils import nodes
    from sphinx import addnodes

    env = app.env
    for xref in list(doctree.findall(addnodes.pending_xref)):
        docname = xref.get("reftarget", "")
        if xref.get("refdomain") != "doc" or docname in env.found_docs:
            continue
        base = Path(env.doc2path(xref.get("refdoc", env.docname))).parent
        files = [Path(docname + s) for s in app.config.source_suffix]
        found = [f if f.is_absolute() else base / f for f in files]
        existing = [f for f in found if f.is_file()]
        if not existing:
            continue  # a missing page: leave it to myst, which warns
        target = os.path.relpath(existing[0], base)
        download = addnodes.download_reference(
            "",
            "",
            *xref.children,
            reftarget=target,
            refdoc=xref.get("refdoc"),
            refexplicit=True,
            classes=["xref", "download", "myst"],
        )
        replacement: list[Any] = [download]
        if xref.get("reftargetid"):
            replacement.append(nodes.Text(f" (section #{xref['reftargetid']})"))
        xref.replace_self(replacement)


def setup(app: Any) -> dict[str, Any]:
    """Register the link fix-up above, before the download collector (priority 500)."""
    app.connect("doctree-read", _outside_links_to_downloads, priority=400)
    return {"parallel_read_safe": True}
