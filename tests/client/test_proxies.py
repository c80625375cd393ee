"""One proxy rule for the sync client and the async pool: HTTP(S)_PROXY, ALL_PROXY and NO_PROXY."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.client.proxies import environment_proxy
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import OpenAIEmulator
from tests.connections import use_emulator

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("shared_pool")]

PROXY = "http://proxy.example:3128"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

# (environment, URL called, proxy used or None): curl's rules, which httpx and the standard library each
# follow only in part (httpx: no CIDR, "orp" matches "gw.corp"; the standard library: no "::1", no schemes).
TABLE: list[tuple[dict[str, str], str, str | None]] = [
    ({"HTTP_PROXY": PROXY}, "http://gw.corp/v1", PROXY),
    ({"HTTP_PROXY": PROXY}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY}, "https://gw.corp/v1", PROXY),
    ({"ALL_PROXY": PROXY}, "https://gw.corp/v1", PROXY),
    ({"https_proxy": PROXY}, "https://gw.corp/v1", PROXY),
    ({"HTTPS_PROXY": "proxy.example:3128"}, "https://gw.corp/v1", PROXY),  # a proxy without scheme is http
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "gw.corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "GW.CORP"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "no_proxy": "gw.corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "*.corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": ".corp"}, "https://corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "orp"}, "https://gw.corp/v1", PROXY),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "other.example, gw.corp"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, "https://gw.corp/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "https://gw.corp"}, "https://gw.corp/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "https://gw.corp"}, "http://gw.corp/v1", PROXY),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "gw.corp:8443"}, "https://gw.corp:8443/v1", None),
    ({"HTTPS_PROXY": PROXY, "NO_PROXY": "gw.corp:8443"}, "https://gw.corp/v1", PROXY),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "::1"}, "http://[::1]:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "[::1]"}, "http://[::1]:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "[::1]:8080"}, "http://[::1]:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "127.0.0.0/8"}, "http://127.1.2.3:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, "http://127.0.0.1/v1", PROXY),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "::1/128"}, "http://[::1]/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": "localhost"}, "http://localhost:8080/v1", None),
    ({"HTTP_PROXY": PROXY, "NO_PROXY": ""}, "http://localhost:8080/v1", PROXY),
]


@pytest.mark.parametrize(("environ", "url", "expected"), TABLE, ids=[f"{e} {u}" for e, u, _ in TABLE])
def test_the_proxy_rule(environ: dict[str, str], url: str, expected: str | None) -> None:
    assert environment_proxy(url, environ) == expected


@pytest.fixture
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def proxy() -> Iterator[OpenAIEmulator]:
    """An emulator standing in for a forward proxy: it serves absolute-form targets as its own paths."""
    with OpenAIEmulator() as emulator:
        yield emulator


@pytest.fixture
def ipv6_emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(host="::1") as emulator:
        yield emulator


def via(proxy: OpenAIEmulator, target: OpenAIEmulator) -> str:
    """Return how the last call reached ``target``: "proxy", "direct" or "nowhere"."""
    if proxy.journal:
        assert proxy.journal[-1].raw_target.startswith("http://")  # absolute form: sent to a proxy
        return "proxy"
    return "direct" if target.journal else "nowhere"


# (NO_PROXY, how the target's host is written, the way the call must take)
PARITY = [
    ("", "127.0.0.1", "proxy"),
    ("127.0.0.1", "127.0.0.1", "direct"),
    ("127.0.0.2", "127.0.0.1", "proxy"),
    ("127.0.0.0/8", "127.0.0.1", "direct"),
    ("localhost", "localhost", "direct"),
    ("*", "127.0.0.1", "direct"),
    ("https://127.0.0.1", "127.0.0.1", "proxy"),
    ("http://127.0.0.1", "127.0.0.1", "direct"),
    ("::1", "[::1]", "direct"),
    ("[::1]", "[::1]", "direct"),
]


@pytest.mark.usefixtures("clean_proxy_environment")
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize(("no_proxy", "host", "way"), PARITY, ids=[f"NO_PROXY={n!r} {h}" for n, h, _ in PARITY])
async def test_sync_and_async_calls_take_the_same_way(
    proxy: OpenAIEmulator,
    openai_emulator: OpenAIEmulator,
    ipv6_emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    no_proxy: str,
    host: str,
    way: str,
) -> None:
    target = ipv6_emulator if host == "[::1]" else openai_emulator
    port = target.base_url.rpartition(":")[2]
    api_base = f"http://{host}:{port}/v1"
    # The proxy answers with the same key: where the request went is all that differs.
    use_emulator(monkeypatch, target)
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    batch_id = "batch_" + mode
    for emulator in (proxy, target):
        emulator.create_batch(batch_id=batch_id)
    hook = PSOpenAIHook(api_base=api_base, timeout_sec=5)
    got = hook.get_batch(batch_id) if mode == "sync" else await hook.aget_batch(batch_id)
    assert got["id"] == batch_id
    assert via(proxy, target) == way
