"""Airflow's own API server app (the simple auth manager, the plugin's page mounted) against the emulator.

Users: vera (viewer), uma (user), otto (op), and a test auth manager for per-DAG rights.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.testclient import TestClient

    from airflow_psopenai.testing import OpenAIEmulator

USERS = {"vera": "viewer", "uma": "user", "otto": "op"}
PASSWORDS = {name: f"{name}-password" for name in USERS}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class PageClient:
    """A client of Airflow's app that logs users in as the UI and scripts do."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def token(self, username: str) -> str:
        """Return a JWT for ``username`` from ``POST /auth/token``."""
        answer = self.client.post("/auth/token", json={"username": username, "password": PASSWORDS[username]})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["access_token"])

    def bearer(self, username: str) -> dict[str, str]:
        """Return the header a script sends."""
        return {"Authorization": f"Bearer {self.token(username)}"}

    def get(self, path: str, username: str | None = None, **kwargs: Any) -> Any:
        """GET ``path`` as ``username`` with a bearer token (None: no credentials)."""
        headers = self.bearer(username) if username else {}
        return self.client.get(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def post(self, path: str, username: str | None = None, **kwargs: Any) -> Any:
        """POST ``path`` as ``username`` with a bearer token (None: no credentials)."""
        headers = self.bearer(username) if username else {}
        return self.client.post(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture
def page_server(
    airflow_db: None, emulator: OpenAIEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PageClient]:
    """Yield a client of Airflow's API server app, whose default connection is the emulator."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from starlette.testclient import TestClient

    from airflow_psopenai import plugin

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE_AUTH_MANAGER)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, r in USERS.items()))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "a-secret-only-for-the-tests-of-the-page-" * 2)
    monkeypatch.setattr(plugin.page_app, "_app", None)  # a fresh page app (and page cache) for each test
    purge_cached_app()
    try:
        with TestClient(create_app(), base_url="http://airflow.test") as client:
            yield PageClient(client)
    finally:
        purge_cached_app()
