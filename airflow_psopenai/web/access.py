"""Who may see and cancel what on the OpenAI page, as Airflow's auth manager decides.

A plugin's app inherits no authentication from Airflow: every route asks for the user through
Airflow's own ``get_user`` (a bearer token, else the UI's cookie on Airflow 3.1+) and its rights through
the auth manager. A batch this deployment tagged with a DAG is governed by that DAG's rights; an untagged
one, or another deployment's, by the connection's (:func:`governing_dag`). The auth manager's calls may
query a database or an identity provider: they run in a thread, never on the API server's event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

    from airflow_psopenai.web.items import Tags

# Browsers send these with every request; a page of another site cannot forge them.
FETCH_SITE_HEADER = "sec-fetch-site"
SAME_ORIGIN = "same-origin"


def governing_dag(tags: Tags) -> str | None:
    """Return the DAG whose rights govern a batch: the DAG it is tagged with; None (the connection's rights)
    for an untagged batch and for another deployment's (one with a deployment tag not this deployment's)."""
    from airflow_psopenai.run_tags import deployment

    if tags.deployment is not None and tags.deployment != deployment():
        return None
    return tags.dag_id


@dataclass(frozen=True)
class Rights:
    """What one user may do with the batches of a set of DAGs and of the page's connection.

    :param readable_dags: DAGs whose batches the user may see.
    :param editable_dags: DAGs whose runs the user may edit (and so cancel their batches).
    :param read_connection: Whether the user may read the connection (see untagged batches).
    :param edit_connection: Whether the user may edit the connection (cancel untagged batches).
    """

    readable_dags: frozenset[str]
    editable_dags: frozenset[str]
    read_connection: bool
    edit_connection: bool

    def may_read(self, tags: Tags) -> bool:
        """Return whether the user may see the batch with these tags."""
        dag_id = governing_dag(tags)
        return self.read_connection if dag_id is None else dag_id in self.readable_dags

    def may_cancel(self, tags: Tags) -> bool:
        """Return whether the user may cancel the batch with these tags."""
        dag_id = governing_dag(tags)
        return self.edit_connection if dag_id is None else dag_id in self.editable_dags


async def rights_of(user: BaseUser, conn_id: str, dag_ids: Iterable[str]) -> Rights:
    """Ask the auth manager, in a thread, what ``user`` may do with the batches of ``dag_ids`` and ``conn_id``."""
    return await asyncio.to_thread(_ask_auth_manager, user, conn_id, frozenset(dag_ids))


def _ask_auth_manager(user: BaseUser, conn_id: str, dag_ids: frozenset[str]) -> Rights:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import (
        ConnectionDetails,
        DagAccessEntity,
        DagDetails,
    )

    manager: Any = get_auth_manager()
    readable = frozenset(manager.filter_authorized_dag_ids(dag_ids=set(dag_ids), user=user, method="GET"))
    editable = frozenset(
        dag_id
        for dag_id in readable
        if manager.is_authorized_dag(
            method="PUT", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
        )
    )
    connection = ConnectionDetails(conn_id=conn_id)
    read_connection = bool(manager.is_authorized_connection(method="GET", details=connection, user=user))
    edit_connection = read_connection and bool(
        manager.is_authorized_connection(method="PUT", details=connection, user=user)
    )
    return Rights(readable, editable, read_connection, edit_connection)


def refuse_cross_site_cookie(request: Request) -> None:
    """Refuse a state change that a page of another origin made with the UI's cookie (403).

    A bearer token is sent only by a client that holds it, so such requests pass. A cookie rides along
    with any request the browser makes: the browser's ``Sec-Fetch-Site`` must say ``same-origin``, or,
    from a browser without it, the ``Origin`` must be this server's. A cookie-borne request with neither
    is refused too.

    :raises HTTPException: 403, naming what was refused.
    """
    authorization = request.headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return
    site = request.headers.get(FETCH_SITE_HEADER)
    if site is not None:
        if site == SAME_ORIGIN:
            return
        raise HTTPException(403, f"Refused: a cancel sent with the UI's cookie from a {site} page.")
    origin = request.headers.get("origin")
    if origin is not None and _same_origin(origin, str(request.base_url)):
        return
    raise HTTPException(
        403,
        "Refused: a cancel sent with the UI's cookie must come from this server's own page "
        f"(Origin {origin!r}); scripts send a bearer token (POST /auth/token).",
    )


def _same_origin(origin: str, base_url: str) -> bool:
    mine, theirs = urlsplit(base_url), urlsplit(origin)
    return (theirs.scheme, theirs.netloc) == (mine.scheme, mine.netloc)
