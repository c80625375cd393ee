"""The DAG-testing recipe as a user gets it: a new project (tests/user_project, what the docs show) run by pytest.

Each test copies the project into a folder of its own and runs pytest on it in a subprocess, with
this repository's Python (where the provider is installed) and an environment without this
suite's Airflow settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USER_PROJECT = Path(__file__).resolve().parents[1] / "user_project"


def new_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(USER_PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    return project


def run_pytest(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "PYTEST", "OPENAI_")) and name != "COLUMNS"
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_documented_project_runs_its_dags_against_the_emulator(tmp_path: Path) -> None:
    project = new_project(tmp_path)

    completed = run_pytest(project)

    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-2000:]
    assert "2 passed" in completed.stdout
    # The private Airflow home was a temporary folder, removed at the end: nothing written into the project.
    assert sorted(path.name for path in project.iterdir()) == sorted(path.name for path in USER_PROJECT.iterdir())


def test_without_a_dags_folder_run_dag_says_what_to_set_and_airflow_is_left_alone(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')

    completed = run_pytest(project, "-x")

    assert completed.returncode == 1, completed.stdout[-3000:]
    assert 'No private Airflow home: set the dags folder to test, e.g. psopenai_dags_folder = "dags"' in (
        completed.stdout
    )


def test_the_dags_folder_may_be_given_on_the_command_line(tmp_path: Path) -> None:
    project = new_project(tmp_path)
    (project / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (project / "dags").rename(project / "airflow_dags")

    completed = run_pytest(project, "--psopenai-dags-folder=airflow_dags", "-k", "cancels_the_batch")

    assert completed.returncode == 0, completed.stdout[-5000:] + completed.stderr[-2000:]
    assert "1 passed" in completed.stdout


@pytest.mark.parametrize(
    ("conftest_head", "message"),
    [
        ("import airflow.configuration\n", "Airflow was imported before the private Airflow home was set up"),
        ("", "does not exist: create it, or set psopenai_dags_folder"),
    ],
    ids=["airflow-imported-first", "no-dags-folder"],
)
def test_a_setup_that_cannot_work_stops_before_any_test(tmp_path: Path, conftest_head: str, message: str) -> None:
    project = new_project(tmp_path)
    conftest = project / "tests" / "conftest.py"
    conftest.write_text(conftest_head + conftest.read_text())
    if not conftest_head:
        shutil.rmtree(project / "dags")

    completed = run_pytest(project)

    assert completed.returncode == 4, completed.stdout[-3000:] + completed.stderr[-3000:]  # a usage error
    assert message in completed.stderr


def test_loading_the_plugin_imports_no_airflow() -> None:
    """pytest loads the plugin in every run of a project listing it: Airflow comes only with a fixture needing it."""
    script = (
        "import sys\n"
        "import airflow_psopenai.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip() == "[]"
