"""Local ports for servers a test starts on a port of its choice (and for addresses nobody serves).

A port from ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral range, which the kernel hands
out again to anyone binding port 0 or connecting out: the emulators of the other pytest-xdist
workers, Airflow's own clients. Between choosing such a port and the server's own bind (the e2e API
server binds it seconds later, after the database is migrated), one of them can take it, and the
server exits with "address already in use". Below the ephemeral range only another explicit choice
lands, and the choice is random, so two of them seldom meet.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Linux's default when /proc does not say (net.ipv4.ip_local_port_range).
DEFAULT_EPHEMERAL_START = 32768
# How far below the ephemeral range ports are chosen from.
CHOICE_SPAN = 12000
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_start() -> int:
    """Return the first port of the kernel's ephemeral range."""
    try:
        return int(PORT_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_START


def free_port() -> int:
    """Return a port on 127.0.0.1 that nobody listens on now, from below the ephemeral range."""
    end = ephemeral_start()
    candidates = range(max(1024, end - CHOICE_SPAN), end)
    for port in random.sample(candidates, k=min(200, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use: try another
                continue
            return port
    raise RuntimeError(f"No free port on 127.0.0.1 between {candidates.start} and {candidates.stop - 1}.")
