"""How many requests a bulk cancel sends at once: the default of StopBatchesOperator, the cleanup callbacks
and the listener, and its one check.

Standard library only, but for this provider's exceptions: operators import this at DAG-parse time.
"""

from __future__ import annotations

from airflow_psopenai.exceptions import PSOpenAIConfigurationError

DEFAULT_MAX_CONCURRENCY = 20
MAX_CONCURRENCY_LIMIT = 200


def require_concurrency(value: object, argument: str = "max_concurrency") -> int:
    """Return how many cancels may be sent at once, 1 to 200, or raise naming ``argument``."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CONCURRENCY_LIMIT:
        return value
    raise PSOpenAIConfigurationError(f"{argument} must be 1 to {MAX_CONCURRENCY_LIMIT}, got {value!r}.")
