"""The OpenAI page's FastAPI app, mounted by the plugin on Airflow's API server under ``/psopenai``.

Routes (every one asks Airflow for the user: 401 without one):

* ``GET /``, ``GET /page.js`` and ``GET /page.css``: the page, plain HTML, a little JavaScript and a style sheet;
* ``GET /api/batches``: the account's batches the user may see, in the API's list shape;
* ``POST /api/batches/{batch_id}/cancel``: one batch, through the cancel path;
* ``POST /api/dags/{dag_id}/runs/{run_id}/cancel``: every running batch of a DAG run, as its failure
  callback cancels them.

Nothing blocks the event loop: the API is called with the hook's async methods, the auth manager and the
database in threads. The API key is sent upstream only; answers carry the hook's redacted messages.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import resources as package_files
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from airflow.providers.common.compat.sdk import conf
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from airflow_psopenai.callbacks import acancel_run_batches
from airflow_psopenai.cancelling.cancel import Action, CancelPolicy, cancel_one
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.client.settings import DEFAULT_API_BASE
from airflow_psopenai.exceptions import PSOpenAIError, PSOpenAINotFoundError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.plugin import SECTION
from airflow_psopenai.resource_task import DEFAULT_CONN_ID
from airflow_psopenai.resources import BATCH, status_of
from airflow_psopenai.web import audit, inputs
from airflow_psopenai.web.access import Rights, refuse_cross_site_cookie, rights_of
from airflow_psopenai.web.items import BATCHES, Tags
from airflow_psopenai.web.listing import PageCache, walk_batches

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_psopenai.client.settings import ApiSettings

# A batch runs at most its completion window (24 h); "running" reads the list back no further, plus a margin.
COMPLETION_WINDOW_SEC = 24 * 3600.0
CUTOFF_MARGIN_SEC = 3600.0
LIST_BUDGET_SEC = 10.0
CANCEL_BUDGET_SEC = 30.0
RUN_CANCEL_BUDGET_SEC = 60.0
# The page's own headers: its scripts and styles from here only, framed only by Airflow's UI.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

NO_RIGHTS = Rights(frozenset(), frozenset(), read_connection=False, edit_connection=False)

User = Annotated[BaseUser, Depends(get_user)]


def conn_id() -> str:
    """Return the connection the page reads and cancels with: ``[psopenai] ui_conn_id``."""
    return str(conf.get(SECTION, "ui_conn_id", fallback=DEFAULT_CONN_ID))


router = APIRouter()


def create_app() -> FastAPI:
    """Return the app (no OpenAPI routes: each route of it asks for the user)."""
    app = FastAPI(title="PSOpenAI", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.page_cache = PageCache()
    app.include_router(router)
    return app


@router.get("/")
async def page(user: User) -> Response:
    """The page."""
    return _static("page.html", "text/html")


@router.get("/page.js")
async def script(user: User) -> Response:
    """The page's script."""
    return _static("page.js", "text/javascript")


@router.get("/page.css")
async def style(user: User) -> Response:
    """The page's style sheet."""
    return _static("page.css", "text/css")


@router.get("/api/batches")
async def list_batches(user: User, request: Request) -> JSONResponse:
    """The account's batches the user may see, newest first, in the API's list shape."""
    query = request.query_params
    status = inputs.status(query.get("status", "running"))
    dag_filter = _optional(query, "dag_id", inputs.dag_id)
    run_filter = _optional(query, "run_id", inputs.run_id)
    cursor = _optional(query, "after", lambda value: inputs.batch_id(value, "after"))
    limit = inputs.limit(query.get("limit"))
    running = status == "running"
    created_after = time.time() - COMPLETION_WINDOW_SEC - CUTOFF_MARGIN_SEC if running else None
    if dag_filter is not None and run_filter is not None:
        # A run's batches were created after it was due: older batches are not read.
        run_after = await _run_after(dag_filter, run_filter)
        created_after = max(created_after or 0.0, datetime.fromisoformat(run_after).timestamp() - 1)
    hook = PSOpenAIHook(conn_id())
    settings = await _settings(hook)
    rights = NO_RIGHTS

    async def select(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal rights
        wanted = [
            obj
            for obj, tags in ((obj, Tags.of(obj)) for obj in objects)
            if (not running or status_of(obj) in BATCHES.running)
            and (dag_filter is None or tags.dag_id == dag_filter)
            and (run_filter is None or tags.run_id == run_filter)
        ]
        dags = {tags.dag_id for tags in map(Tags.of, wanted) if tags.dag_id is not None}
        rights = await rights_of(user, hook.conn_id, dags | rights.readable_dags)
        return [obj for obj in wanted if rights.may_read(Tags.of(obj))]

    walk = await walk_batches(
        hook,
        request.app.state.page_cache,
        after=cursor,
        limit=limit,
        select=select,
        created_after=created_after,
        budget=Deadline.budget(LIST_BUDGET_SEC),
    )
    if not walk.read_any and walk.incomplete is not None:
        raise HTTPException(502, walk.incomplete)
    console = settings.api_base == DEFAULT_API_BASE
    data = []
    for obj in walk.data:
        tags = Tags.of(obj)
        data.append(BATCHES.item(obj, tags, can_cancel=rights.may_cancel(tags), console=console))
    body: dict[str, Any] = {"object": "list", "data": data, "has_more": walk.has_more, "last_id": walk.last_id}
    if walk.incomplete is not None:
        body["incomplete"] = walk.incomplete
    return JSONResponse(body, headers=API_HEADERS)


@router.post("/api/batches/{batch_id:path}/cancel")
async def cancel_batch(user: User, request: Request, batch_id: str) -> JSONResponse:
    """Cancel one batch through the cancel path; a batch already cancelling gets nothing more."""
    batch_id = inputs.batch_id(batch_id)
    refuse_cross_site_cookie(request)
    hook = PSOpenAIHook(conn_id())
    await _settings(hook)
    budget = Deadline.budget(CANCEL_BUDGET_SEC)
    ids = {"batch_id": batch_id}
    try:
        current = await hook.aget_object(BATCH, ids, deadline=budget)
    except PSOpenAINotFoundError:
        raise HTTPException(404, f"No batch {batch_id!r} on connection {hook.conn_id!r}.") from None
    except PSOpenAIError as error:
        raise HTTPException(502, str(error)) from None
    tags = Tags.of(current)
    rights = await rights_of(user, hook.conn_id, [] if tags.dag_id is None else [tags.dag_id])
    entry: dict[str, Any] = {"batch_id": batch_id, "conn_id": hook.conn_id}
    if not rights.may_cancel(tags):
        refused = {**entry, "action": "refused"}
        await audit.record(user, audit.CANCEL_BATCH_EVENT, dag_id=tags.dag_id, run_id=tags.run_id, extra=refused)
        raise HTTPException(403, _refusal(tags, batch_id))

    async def look() -> dict[str, Any]:
        return current

    policy = CancelPolicy(if_not_cancellable="succeed")
    result = await cancel_one(hook, BATCH, ids, policy, deadline=budget, look=look)
    request.app.state.page_cache.clear()
    body = {"id": batch_id, "status": result.status or result.found, "action": result.action.name.lower()}
    done = {**entry, "action": body["action"], "status": body["status"], "message": result.message}
    await audit.record(user, audit.CANCEL_BATCH_EVENT, dag_id=tags.dag_id, run_id=tags.run_id, extra=done)
    if result.action is Action.FAILED:
        return JSONResponse({**body, "detail": result.message}, status_code=502, headers=API_HEADERS)
    return JSONResponse(body, headers=API_HEADERS)


@router.post("/api/dags/{dag_id}/runs/{run_id}/cancel")
async def cancel_run(user: User, request: Request, dag_id: str, run_id: str) -> JSONResponse:
    """Cancel every running batch of a DAG run, as its failure callback does."""
    dag_id = inputs.dag_id(dag_id)
    run_id = inputs.run_id(run_id)
    refuse_cross_site_cookie(request)
    connection = conn_id()
    entry: dict[str, Any] = {"conn_id": connection}
    rights = await rights_of(user, connection, [dag_id])
    if dag_id not in rights.editable_dags:
        refused = {**entry, "action": "refused"}
        await audit.record(user, audit.CANCEL_RUN_EVENT, dag_id=dag_id, run_id=run_id, extra=refused)
        raise HTTPException(403, f"You may not edit the runs of DAG {dag_id!r}: cancelling their batches needs it.")
    run_after = await _run_after(dag_id, run_id)
    context = {"dag_run": {"dag_id": dag_id, "dag_run_id": run_id, "run_after": run_after}}
    summary = await acancel_run_batches(context, conn_id=connection, timeout_sec=RUN_CANCEL_BUDGET_SEC)
    request.app.state.page_cache.clear()
    done = {**entry, "action": "failed" if summary is None else "sent", "summary": summary}
    await audit.record(user, audit.CANCEL_RUN_EVENT, dag_id=dag_id, run_id=run_id, extra=done)
    if summary is None:
        raise HTTPException(502, "The run's batches could not be cancelled; the API server's log says why.")
    return JSONResponse({"dag_id": dag_id, "run_id": run_id, "summary": summary}, headers=API_HEADERS)


def _optional(query: Mapping[str, str], name: str, check: Callable[[str], str]) -> str | None:
    value = query.get(name)
    return None if value is None else check(value)


async def _settings(hook: PSOpenAIHook) -> ApiSettings:
    try:
        return await hook.asettings()
    except PSOpenAIError as error:
        raise HTTPException(502, str(error)) from None


async def _run_after(dag_id: str, run_id: str) -> str:
    """Return the run's ``run_after`` (ISO 8601) from the metadata database, in a thread.

    :raises HTTPException: 404 when Airflow has no such run.
    """
    import asyncio

    def read() -> datetime | None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return session.scalar(select(DagRun.run_after).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))

    found = await asyncio.to_thread(read)
    if found is None:
        raise HTTPException(404, f"DAG {dag_id!r} has no run {run_id!r}.")
    return (found if found.tzinfo else found.replace(tzinfo=UTC)).isoformat()


def _refusal(tags: Tags, batch_id: str) -> str:
    if tags.dag_id is None:
        return f"Batch {batch_id!r} names no DAG run: cancelling it needs edit rights on the connection."
    return f"Batch {batch_id!r} belongs to DAG {tags.dag_id!r}: cancelling it needs edit rights on that DAG's runs."


def _static(name: str, media_type: str) -> Response:
    content = package_files.files("airflow_psopenai.web").joinpath("static", name).read_bytes()
    return Response(content, media_type=f"{media_type}; charset=utf-8", headers=PAGE_HEADERS)
