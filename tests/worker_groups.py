"""Which tests share a pytest-xdist worker (``make test`` runs ``-n 4 --dist loadgroup``).

Tests that use the same package- or module-scoped fixture (the end-to-end Airflow stack, the
``airflow`` CLI runs, the properties' emulator) are sent to one worker as one unit, so that the
fixture is set up once, as in a run without workers; every other test goes to whichever worker is
free. Session-scoped fixtures (the Airflow database) are set up once per worker, each in its own
Airflow home (tests/conftest.py).

The units are named here by node ID prefix: the scheduler runs in the controlling process, which
collects nothing (and xdist's own ``xdist_group`` marks do not reach it on pytest 9.2). Each worker
checks at collection that every test using such a fixture is covered, and warns otherwise.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from xdist.remote import Producer

# Node ID prefixes whose tests run as one unit on one worker.
SHARED_UNITS = (
    "tests/e2e/",
    "tests/hooks/test_provider.py::",
    "tests/test_properties.py::",
)
SHARED_SCOPES = ("package", "module", "class")


def unit_of(nodeid: str) -> str:
    """Return the unit a test is scheduled in: its shared prefix, or the test itself."""
    return next((prefix for prefix in SHARED_UNITS if nodeid.startswith(prefix)), nodeid)


def shared_fixtures(item: pytest.Item) -> list[str]:
    """Return the package-, module- or class-scoped fixtures ``item`` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [name for name, definitions in info.name2fixturedefs.items() if definitions[-1].scope in SHARED_SCOPES]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> Any:
    """Schedule by unit under ``--dist loadgroup``."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Warn about a test whose shared fixture would be set up on each worker."""
    for item in items:
        fixtures = shared_fixtures(item)
        if fixtures and unit_of(item.nodeid) == item.nodeid:
            warnings.warn(
                f"{item.nodeid} uses {', '.join(fixtures)} (shared between tests) but is in no unit of "
                "tests/worker_groups.py's SHARED_UNITS: under make test each worker sets the fixture up again.",
                stacklevel=1,
            )
