"""Sphinx configuration of the airflow-psopenai documentation (``make docs``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from airflow_psopenai import __version__

if TYPE_CHECKING:
    from sphinx.application import Sphinx

project = "airflow-psopenai"
author = "airflow-psopenai developers"
copyright = "airflow-psopenai developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
# Headings get anchors, so that pages can link to a section as page.md#anchor.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"airflow-psopenai {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Every cross-reference must resolve (-n), except to types documented elsewhere: the build runs offline,
# so there is no intersphinx inventory for Python, Airflow, httpx or pytest to resolve them against.
nitpick_ignore_regex = [
    ("py:.*", r"(airflow|httpx|pytest|starlette|datetime|collections|typing|types|asyncio|logging|fnmatch)(\..*)?"),
    ("py:.*", r"fastapi(\..*)?"),
    # The internal layers (the HTTP client's settings and retry policy, the shared task logic) are not part of the
    # reference; the public classes name them in return types only.
    ("py:.*", r"airflow_psopenai\.(client|waiting|cancelling)\..*"),
    # The emulator's records; its BatchSchedule is described on the testing page.
    ("py:.*", r"airflow_psopenai\.testing\.objects\..*"),
]
# Names imported for type checking only (under TYPE_CHECKING), which autodoc sees without their module.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "ApiSettings",
        "BatchSchedule",
        "Clock",
        "DagRunResult",
        "DagRunner",
        "Deadline",
        "IfNotCancellable",
        "JsonObject",
        "Path",
        "PokeReturnValue",
        "Response",
        "TriggerEvent",
        "timedelta",
    )
]


def _benchmark_paths(app: Sphinx, relative_path: object, parent_docname: str, content: list[str]) -> None:
    """Point the included benchmark report's plots, written relative to the repository's root, at the right place."""
    if str(relative_path).endswith("benchmarks/results/latest.md"):
        content[0] = re.sub(r"\]\(benchmarks/results/", "](../benchmarks/results/", content[0])


def setup(app: Sphinx) -> None:
    app.connect("include-read", _benchmark_paths)
