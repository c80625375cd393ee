"""How messages word counts: one place for every count of batches, cancels and pages."""

from __future__ import annotations

import pytest

from airflow_psopenai.resources import counted


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (1, "batch", "1 batch"),
        (2, "batch", "2 batches"),
        (0, "batch", "0 batches"),
        (1, "cancel", "1 cancel"),
        (3, "cancel", "3 cancels"),
        (1, "page", "1 page"),
        (2, "page", "2 pages"),
    ],
)
def test_a_count_takes_the_singular_only_for_one(count: int, noun: str, expected: str) -> None:
    assert counted(count, noun) == expected
