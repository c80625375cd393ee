"""The ports tests choose for their own servers come from below the kernel's ephemeral range."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from tests import ports

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.server
def test_a_chosen_port_is_below_the_ephemeral_range_and_free() -> None:
    port = ports.free_port()
    assert max(1024, ports.ephemeral_start() - ports.CHOICE_SPAN) <= port < ports.ephemeral_start()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_the_ephemeral_range_is_read_from_the_kernel_or_linux_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("40000\t60999\n")
    monkeypatch.setattr(ports, "PORT_RANGE_FILE", range_file)
    assert ports.ephemeral_start() == 40000
    monkeypatch.setattr(ports, "PORT_RANGE_FILE", tmp_path / "missing")
    assert ports.ephemeral_start() == ports.DEFAULT_EPHEMERAL_START
