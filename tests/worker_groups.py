"""Which tests share a pytest-xdist worker (``make test`` runs ``-n 2 --dist loadgroup``).

Tests that use the same package-, module- or class-scoped fixture (the end-to-end Airflow stack, the
``airflow`` CLI runs, the properties' emulator) are sent to one worker, so that the fixture is set up
once, as in a run without workers. Session-scoped fixtures (the Airflow database) are set up once
per worker, each in its own Airflow home.
"""

from __future__ import annotations

import pytest

SHARED_SCOPES = ("package", "module", "class")


def shared_fixture(item: pytest.Item) -> str | None:
    """Return the widest-scoped shared fixture ``item`` uses, as ``scope:where:name``, or None."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    found: list[tuple[int, str]] = []
    for name, definitions in info.name2fixturedefs.items():
        definition = definitions[-1]
        if definition.scope in SHARED_SCOPES:
            found.append((SHARED_SCOPES.index(definition.scope), f"{definition.scope}:{definition.baseid}:{name}"))
    return min(found)[1] if found else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the tests of each shared fixture in one xdist group."""
    for item in items:
        group = shared_fixture(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
