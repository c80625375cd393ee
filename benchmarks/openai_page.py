"""The OpenAI page's cost: 20 viewers asking for the running batches of an account of 10,000 batches.

In a fresh process with a private Airflow home, the emulator (over real HTTP on 127.0.0.1) holds ``N`` batches
of this deployment (``airflow_deployment`` tag), nine in ten running, spread over a few DAGs. Airflow's API
server app (``airflow.api_fastapi.app.create_app``, the simple auth manager, the plugin's page mounted) is
served by uvicorn on a local port, as ``airflow api-server`` serves it, in a thread of the same process.
``VIEWERS`` viewers, each with a bearer token from ``POST /auth/token``, ask ``GET /psopenai/api/batches``
(``status=running``, the first page) at the same moment, in rounds: the first round finds the page cache empty
(cold), the next ones fall within its interval (warm), and one round after the interval reads the list again
(refresh). Reported per kind of round: median and p95 answer time of a viewer's request, and the list requests
the emulator received (its journal) per round; and the bytes of a page.

Run alone: ``python -m benchmarks.openai_page`` (writes ``benchmarks/results/openai_page.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import RESULTS, airflow_home, load_average, report, run_worker, worker_env

if TYPE_CHECKING:
    from collections.abc import Iterator

N, VIEWERS = 10_000, 20
WARM_ROUNDS = 3
DAG_IDS = ("bench_page_ingest", "bench_page_embed", "bench_page_score", "bench_page_report")
DEPLOYMENT = "bench"
PAGE = "/psopenai/api/batches"
LIST = "/v1/batches"
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
JWT_SECRET = "a-secret-only-for-the-page-benchmark-" * 2
SERVER_START_SEC = 60.0
WORKER_TIMEOUT_SEC = 600.0


def measure(n: int = N, viewers: int = VIEWERS, warm_rounds: int = WARM_ROUNDS) -> dict[str, Any]:
    """Seed ``n`` batches, serve the page, let ``viewers`` ask for it together in rounds, and return the figures.

    It runs in a fresh process with a private Airflow home: the API server needs a metadata database
    (revoked tokens), and Airflow reads its home once per process.
    """
    with airflow_home() as home:
        arguments = {"n": n, "viewers": viewers, "warm_rounds": warm_rounds}
        return run_worker("benchmarks.openai_page", arguments, worker_env(home), WORKER_TIMEOUT_SEC)


def _measure_here(n: int, viewers: int, warm_rounds: int) -> dict[str, Any]:
    from airflow.utils import db

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import connection_json
    from airflow_psopenai.web.listing import PAGE_TTL_SEC

    load = load_average()[0]
    db.resetdb()
    users = [f"viewer{number}" for number in range(viewers)]
    with OpenAIEmulator() as emulator, tempfile.TemporaryDirectory(prefix="psopenai-bench-page-") as home:
        passwords = Path(home) / "passwords.json"
        passwords.write_text(json.dumps({user: f"{user}-password" for user in users}))
        os.environ.update(
            {
                "AIRFLOW_CONN_PSOPENAI_DEFAULT": connection_json(emulator),
                "AIRFLOW__PSOPENAI__DEPLOYMENT": DEPLOYMENT,
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:viewer" for user in users),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            }
        )
        for number in range(n):
            emulator.create_batch(
                status="completed" if number % 10 == 0 else "in_progress",
                metadata={
                    "airflow_deployment": DEPLOYMENT,
                    "airflow_dag_id": DAG_IDS[number % len(DAG_IDS)],
                    "airflow_run_id": f"run-{number % 50}",
                    "airflow_task_id": "submit",
                },
            )
        with _served_app() as base_url:
            rounds = asyncio.run(_rounds(emulator, base_url, users, warm_rounds, PAGE_TTL_SEC))
    cold, warm, refresh = rounds[0], rounds[1:-1], rounds[-1]
    return {
        "n": n,
        "viewers": viewers,
        "load_before": load,
        "server": "uvicorn on 127.0.0.1 (a thread of the measured process, beside the emulator and the clients)",
        "cache_interval_sec": PAGE_TTL_SEC,
        "page_bytes": cold["page_bytes"],
        "page_items": cold["page_items"],
        "cold": _summary([cold]),
        "warm": _summary(warm) | {"rounds": len(warm)},
        "refresh": _summary([refresh]),
        "list_requests_per_round": [one["list_requests"] for one in rounds],
        "round_offsets_sec": [round(one["offset_sec"], 2) for one in rounds],
        "statuses": sorted({status for one in rounds for status in one["statuses"]}),
    }


@contextlib.contextmanager
def _served_app() -> Iterator[str]:
    """Serve Airflow's API server app with uvicorn on a free port of 127.0.0.1, in a thread; yield its URL."""
    import uvicorn
    from airflow.api_fastapi.app import create_app, purge_cached_app

    from airflow_psopenai import plugin

    plugin.page_app._app = None  # a fresh page app, and so an empty page cache
    purge_cached_app()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
        thread.start()
        try:
            started = time.monotonic()
            while not server.started:
                if not thread.is_alive() or time.monotonic() - started > SERVER_START_SEC:
                    raise RuntimeError("The page's app did not start under uvicorn; the worker's log says why.")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{listening.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(SERVER_START_SEC)
            purge_cached_app()


async def _rounds(emulator: Any, base_url: str, users: list[str], warm_rounds: int, ttl: float) -> list[dict[str, Any]]:
    import httpx

    limits = httpx.Limits(max_connections=len(users), max_keepalive_connections=len(users))
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:
        tokens = []
        for user in users:
            answer = await client.post("/auth/token", json={"username": user, "password": f"{user}-password"})
            answer.raise_for_status()
            tokens.append(answer.json()["access_token"])
        # Warm rounds fit well inside the interval; the refresh round starts just past it.
        offsets = [0.0] + [ttl * (index + 1) / (2 * (warm_rounds + 1)) for index in range(warm_rounds)] + [ttl * 1.2]
        started = time.monotonic()
        rounds = []
        for offset in offsets:
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            rounds.append(await _round(client, emulator, tokens, time.monotonic() - started))
    return rounds


async def _round(client: Any, emulator: Any, tokens: list[str], offset: float) -> dict[str, Any]:
    before = len(emulator.journal)

    async def ask(token: str) -> tuple[float, int, int, int]:
        start = time.perf_counter()
        answer = await client.get(PAGE, headers={"Authorization": f"Bearer {token}"})
        seconds = time.perf_counter() - start
        items = len(answer.json().get("data", [])) if answer.status_code == 200 else 0
        return seconds, answer.status_code, len(answer.content), items

    answers = await asyncio.gather(*(ask(token) for token in tokens))
    journal = emulator.journal[before:]
    return {
        "offset_sec": offset,
        "seconds": [seconds for seconds, _, _, _ in answers],
        "statuses": [status for _, status, _, _ in answers],
        "page_bytes": max(size for _, _, size, _ in answers),
        "page_items": max(items for _, _, _, items in answers),
        "list_requests": sum(1 for entry in journal if entry.method == "GET" and entry.path == LIST),
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    times = sorted(seconds for one in rounds for seconds in one["seconds"])
    if not times:
        return {"median_ms": None, "p95_ms": None, "list_requests": []}
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return {
        "median_ms": _ms(statistics.median(times)),
        "p95_ms": _ms(p95),
        "list_requests": [one["list_requests"] for one in rounds],
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def markdown(figures: dict[str, Any]) -> list[str]:
    """Return the report's section for the OpenAI page."""
    lines = [
        "## OpenAI page (`GET /psopenai/api/batches`)",
        "",
        f"{figures['viewers']} viewers at once, {figures['n']:,} batches, cache interval "
        f"{figures['cache_interval_sec']:g} s; a page of {figures['page_items']} batches is "
        f"{figures['page_bytes']:,} bytes. Served by {figures['server']}; load average "
        f"{figures['load_before']:.1f} at the start.",
        "",
        "| round | median ms | p95 ms | list requests upstream per round |",
        "|---|---|---|---|",
    ]
    for name, label in (("cold", "cold (first)"), ("warm", "warm (within the interval)"), ("refresh", "after it")):
        part = figures[name]
        requests = ", ".join(str(count) for count in part["list_requests"])
        lines.append(f"| {label} | {part['median_ms']} | {part['p95_ms']} | {requests} |")
    lines.append("")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        report(_measure_here(**json.loads(argv[1])))
        return 0
    figures = measure()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "openai_page.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(markdown(figures)))
    within = (
        figures["statuses"] == [200]
        and all(count == 0 for count in figures["warm"]["list_requests"])
        and figures["cold"]["list_requests"][0] >= 1
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
