"""Checks of what a request to the OpenAI page names, made before any request to the API or the database.

Each refusal is a 400 that names the parameter, what was wrong and what is expected.
"""

from __future__ import annotations

import re

from fastapi import HTTPException

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
STATUS_CHOICES = ("running", "all")
# Batch IDs as the API and Azure write them: batch_ and letters, digits, - and _.
BATCH_ID = re.compile(r"batch_[A-Za-z0-9_-]{1,100}")
MAX_BATCH_ID_LENGTH = 106
# Airflow's own limit on DAG and run IDs (the columns' width).
MAX_AIRFLOW_ID_LENGTH = 250
DAG_ID = re.compile(r"[A-Za-z0-9_.-]+")


def batch_id(value: str, name: str = "batch_id") -> str:
    """Return ``value`` if it is a batch ID.

    :raises HTTPException: 400 for another kind of ID, a path, an over-long or empty value.
    """
    if len(value) > MAX_BATCH_ID_LENGTH:
        raise HTTPException(
            400, f"{name} is {len(value)} characters long; a batch ID has at most {MAX_BATCH_ID_LENGTH}."
        )
    if BATCH_ID.fullmatch(value) is None:
        raise HTTPException(
            400,
            f"{name} {value!r} is no batch ID: batch IDs start with 'batch_' followed by letters, digits, '-' or '_'.",
        )
    return value


def dag_id(value: str, name: str = "dag_id") -> str:
    """Return ``value`` if it can be a DAG ID (letters, digits, ``.``, ``-``, ``_``; at most 250).

    :raises HTTPException: 400 naming the problem.
    """
    _length(value, name)
    if DAG_ID.fullmatch(value) is None:
        raise HTTPException(400, f"{name} {value!r} is no DAG ID: letters, digits, '.', '-' and '_' only.")
    return value


def run_id(value: str, name: str = "run_id") -> str:
    """Return ``value`` if it can be a DAG run ID (printable, no ``/``, at most 250 characters).

    :raises HTTPException: 400 naming the problem.
    """
    _length(value, name)
    if not value.isprintable() or "/" in value or value.strip() != value or value in {".", ".."}:
        raise HTTPException(
            400, f"{name} {value!r} is no DAG run ID: printable characters, no '/' and no spaces around."
        )
    return value


def status(value: str) -> str:
    """Return the ``status`` filter: ``running`` or ``all``.

    :raises HTTPException: 400 for anything else.
    """
    if value not in STATUS_CHOICES:
        raise HTTPException(400, f"status must be one of {', '.join(STATUS_CHOICES)}, got {value[:40]!r}.")
    return value


def limit(value: str | None) -> int:
    """Return ``limit``: a whole number from 1 to 100 (default 20).

    :raises HTTPException: 400 for anything else.
    """
    if value is None:
        return DEFAULT_LIMIT
    if value.isdigit() and 1 <= int(value) <= MAX_LIMIT:
        return int(value)
    raise HTTPException(400, f"limit must be a whole number from 1 to {MAX_LIMIT}, got {value[:40]!r}.")


def _length(value: str, name: str) -> None:
    if not value:
        raise HTTPException(400, f"{name} is empty.")
    if len(value) > MAX_AIRFLOW_ID_LENGTH:
        raise HTTPException(400, f"{name} is {len(value)} characters long; Airflow allows {MAX_AIRFLOW_ID_LENGTH}.")
