"""The public names: each name a module's ``__all__`` lists exists, and what the README and the API reference
name as public is exported by its subpackage."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import airflow_psopenai

REPO = Path(__file__).resolve().parent.parent
# Where a user imports the public names from (README.md, docs/api/).
PUBLIC_MODULES = (
    "airflow_psopenai.hooks",
    "airflow_psopenai.operators",
    "airflow_psopenai.sensors",
    "airflow_psopenai.triggers",
    "airflow_psopenai.callbacks",
    "airflow_psopenai.run_tags",
    "airflow_psopenai.testing",
)


def modules_with_all() -> list[str]:
    names = [airflow_psopenai.__name__]
    names += [info.name for info in pkgutil.walk_packages(airflow_psopenai.__path__, "airflow_psopenai.")]
    return [name for name in names if hasattr(importlib.import_module(name), "__all__")]


def exported(module_name: str) -> set[str]:
    """Return a public module's names: its ``__all__``, or, without one, what it defines without an underscore."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", module_name) == module_name
    }


def readme_names() -> list[str]:
    """Return the names of the README's table of what the provider offers (first column, each backticked name)."""
    text = (REPO / "README.md").read_text()
    table = text.split("## What it offers", 1)[1].split("\n\n", 2)[1]
    cells = [row.split("|")[1] for row in table.splitlines() if row.startswith("| `")]
    return [name for cell in cells for name in re.findall(r"`([A-Za-z_]\w*)[`(]", cell)]


def reference_names() -> list[tuple[str, str]]:
    """Return ``(subpackage, name)`` of each class the API reference documents from a subpackage's top level."""
    found = []
    for page in sorted((REPO / "docs" / "api").glob("*.md")):
        for path in re.findall(r"\.\. auto(?:class|function|data):: (airflow_psopenai\.[\w.]+)", page.read_text()):
            package, _, name = path.rpartition(".")
            if package in PUBLIC_MODULES:
                found.append((package, name))
    return found


@pytest.mark.parametrize("module_name", modules_with_all())
def test_each_name_of_all_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{module_name}.__all__ lists names it does not have"
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_public_subpackages_and_callbacks_declare_all() -> None:
    declared = modules_with_all()
    assert [name for name in PUBLIC_MODULES if name != "airflow_psopenai.run_tags" and name not in declared] == []


@pytest.mark.parametrize("name", readme_names())
def test_each_name_the_readme_offers_is_exported(name: str) -> None:
    assert any(name in exported(module) for module in PUBLIC_MODULES), f"{name} is exported by no public module"


def test_the_readme_offers_the_names_it_is_read_for() -> None:
    """The table parser reads the README's names (an empty list would make the test above pass on nothing)."""
    names = readme_names()
    assert {"StopBatchOperator", "ResourceSetStatusTrigger", "cancel_run_batches_with", "run_tags"} <= set(names)


@pytest.mark.parametrize(("package", "name"), reference_names())
def test_each_class_the_reference_documents_at_a_subpackage_is_exported_there(package: str, name: str) -> None:
    assert name in exported(package)
