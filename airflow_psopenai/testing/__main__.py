"""Run the emulator until SIGINT or SIGTERM: ``python -m airflow_psopenai.testing --port 8765``.

The first line on stdout is the API base URL (e.g. ``http://127.0.0.1:8765/v1``), so a script can
start the emulator in the background and read where it listens.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from airflow_psopenai.testing.emulator import DEFAULT_API_KEY, OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Sequence

DEFAULT_CANCEL_DELAY = 5.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Return the command line options."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_psopenai.testing",
        description="Serve an OpenAI API emulator (batches, thread runs, responses) until SIGINT or SIGTERM. "
        "Prints the API base URL as the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key accepted (default: %(default)s)")
    parser.add_argument(
        "--cancel-delay",
        type=float,
        default=DEFAULT_CANCEL_DELAY,
        help="seconds from cancelling to cancelled (default: %(default)s)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every API answer (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until a signal arrives; return the exit status."""
    args = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = OpenAIEmulator(
        api_key=args.api_key, cancel_delay=args.cancel_delay, host=args.host, port=args.port, latency=args.latency
    )
    with emulator:
        print(emulator.api_base, flush=True)
        print(f"OpenAI emulator serving {emulator.api_base}; admin at {emulator.base_url}/_emulator", file=sys.stderr)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
