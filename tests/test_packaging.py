"""The wheel and the sdist as they would be published: their files, their metadata, and ``twine check``.

Both are built from this checkout with ``python -m build --no-isolation`` (the venv's hatchling: no
network), into a temporary folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APACHE_LICENSE_FIRST_LINES = ("Apache License", "Version 2.0, January 2004")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    outdir = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(REPO)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = outdir.glob("*.whl")
    (sdist,) = outdir.glob("*.tar.gz")
    return wheel, sdist


def sdist_files(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        # Each name starts with the sdist's root folder (airflow_psopenai-0.1.0/).
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def wheel_metadata(wheel: Path) -> tuple[set[str], str]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        return names, archive.read(metadata).decode()


def test_wheel_ships_the_package_and_the_license_in_its_metadata(dists: tuple[Path, Path]) -> None:
    wheel, _ = dists
    names, metadata = wheel_metadata(wheel)
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"airflow_psopenai", "airflow_psopenai-0.1.0.dist-info"}
    assert {"airflow_psopenai/py.typed", "airflow_psopenai/testing/emulator.py"} <= names
    assert "airflow_psopenai-0.1.0.dist-info/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as archive:
        license_text = archive.read("airflow_psopenai-0.1.0.dist-info/licenses/LICENSE").decode()
    assert [line.strip() for line in license_text.splitlines()[:2]] == list(APACHE_LICENSE_FIRST_LINES)
    assert license_text == (REPO / "LICENSE").read_text()

    headers = Parser().parsestr(metadata)
    assert headers["License-Expression"] == "Apache-2.0"
    assert headers.get_all("License-File") == ["LICENSE"]
    classifiers = set(headers.get_all("Classifier") or [])
    assert {f"Programming Language :: Python :: 3.{minor}" for minor in (11, 12, 13)} <= classifiers
    assert headers["Requires-Python"] == ">=3.11"


def test_sdist_holds_package_readme_license_tests_and_examples_only(dists: tuple[Path, Path]) -> None:
    _, sdist = dists
    files = sdist_files(sdist)
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= files
    assert "airflow_psopenai/__init__.py" in files
    assert "tests/conftest.py" in files
    assert "example_dags/example_psopenai_cancel_on_failure.py" in files
    assert "scripts/demo.py" in files  # tests/examples/test_demo.py runs it
    top_level = {name.split("/", 1)[0] for name in files}
    assert top_level <= {
        "airflow_psopenai",
        "tests",
        "example_dags",
        "scripts",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "PKG-INFO",
        ".gitignore",
    }
    assert not [name for name in files if name.startswith(("benchmarks/", "requirements/", ".ci/", "docs/"))]
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert not [name for name in files if name.startswith("scripts/") and not name.endswith(".py")]


def test_twine_check_passes(dists: tuple[Path, Path]) -> None:
    wheel, sdist = dists
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_readme_renders_on_the_package_index_without_relative_links() -> None:
    # The README is also the package's page on the index, where a relative link or image has nothing to point at.
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)", readme) + re.findall(r"<img[^>]+src=\"([^\"]+)\"", readme)
    relative = [target for target in targets if not target.startswith(("https://", "http://"))]
    assert relative == []
    assert len(readme.splitlines()) <= 300


def test_the_documented_install_builds_and_installs_this_wheel(dists: tuple[Path, Path]) -> None:
    """README.md and the getting-started page build the wheel from the checkout and install the file it makes."""
    wheel, _ = dists
    for page in (REPO / "README.md", REPO / "docs" / "getting-started.md"):
        text = page.read_text()
        assert "pip wheel --no-deps --wheel-dir dist ." in text, page
        assert f"pip install dist/{wheel.name} \\\n  --constraint" in text, page
