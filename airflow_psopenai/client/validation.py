"""Checks of user input that run before any request is sent.

Standard library only, but for this provider's exceptions and resource table: operators import this at
DAG-parse time.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from airflow_psopenai.client.rendered import parse_rendered_text
from airflow_psopenai.exceptions import PSOpenAIConfigurationError

if TYPE_CHECKING:
    from airflow_psopenai.resources import CancellableResource

MAX_RETRY_COUNT_LIMIT = 100

_Number = TypeVar("_Number", int, float)


def require_id(argument: str, value: object) -> str:
    """Return ``value`` as an ID for the API, or raise ``ValueError`` naming ``argument`` and the value.

    Refuses what a template or XCom hands over when something upstream went wrong: None, the string
    ``"None"``, empty or blank strings, lists (several IDs where one is needed) and other non-strings.
    Surrounding white space (a trailing newline from a template) is dropped.
    """
    if value is None:
        raise PSOpenAIConfigurationError(
            f"{argument} is None: give the ID, or check that the template or XCom it comes from returns one."
        )
    if isinstance(value, list | tuple | set):
        raise PSOpenAIConfigurationError(
            f"{argument} rendered to a {type(value).__name__} ({preview(value)}) where one ID is needed: "
            f"map over the IDs with .partial(...).expand({argument}=...), cancel them in one task with "
            f"StopBatchesOperator(batch_ids=...), or pick one."
        )
    if isinstance(value, dict):
        raise PSOpenAIConfigurationError(
            f"{argument} rendered to a dict ({preview(value)}): pass the object with the object "
            "argument (batch= or run=) instead, or select its 'id'."
        )
    if not isinstance(value, str):
        raise PSOpenAIConfigurationError(
            f"{argument} must be a string ID, got {type(value).__name__} {preview(value)}."
        )
    stripped = value.strip()
    if stripped[:1] in ("[", "(", "{"):
        # A list or dict that a non-native template turned into its text.
        parsed = parse_rendered_text(stripped)
        if isinstance(parsed, list | tuple | dict):
            return require_id(argument, list(parsed) if isinstance(parsed, tuple) else parsed)
    if not stripped:
        raise PSOpenAIConfigurationError(f"{argument} is empty ({value!r}): give the ID, such as 'batch_abc123'.")
    if stripped == "None":
        raise PSOpenAIConfigurationError(
            f"{argument} rendered to the string 'None': the template or XCom it comes from returned "
            "nothing. Check that the upstream task pushed the ID (and the task_id/key in xcom_pull)."
        )
    return stripped


def require_conn_id(value: object, argument: str = "conn_id") -> str:
    """Return the name of an Airflow connection, or raise naming ``argument`` (None and blanks are no name)."""
    if isinstance(value, str) and value.strip():
        return value
    raise PSOpenAIConfigurationError(
        f"{argument} must be the name of an Airflow connection (text), got {value!r}: pass conn_id='...', "
        "or leave it out for psopenai_default."
    )


def require_id_of(resource: CancellableResource, id_field: str, value: object, argument: str | None = None) -> str:
    """Return ``value`` as the ``id_field`` of a ``resource`` object, refused as :func:`require_id` refuses it,
    and refused when its prefix is another kind's known one (``resp_`` given as a batch ID), naming what to use.

    An ID of no known kind is taken: gateways and emulators may give IDs of their own.

    :param argument: How the message names the value (default ``id_field``).
    """
    argument = argument or id_field
    checked = require_id(argument, value)
    kind = resource.kind_of_foreign_id(id_field, checked)
    if kind is not None:
        field_words = id_field.removesuffix("_id").replace("_", " ")
        raise PSOpenAIConfigurationError(
            f"{argument} {checked!r} is the ID of {kind.what}, not of a {field_words}: {kind.use}."
        )
    return checked


def require_retry_count(value: object, argument: str = "max_retry_count") -> int:
    """Return a retry count between 0 and 100 (PSOpenAI's range), or raise ``ValueError``."""
    count = _number(value, int, argument, "a whole number from 0 to 100")
    if not 0 <= count <= MAX_RETRY_COUNT_LIMIT:
        raise PSOpenAIConfigurationError(f"{argument} must be from 0 to {MAX_RETRY_COUNT_LIMIT}, got {count}.")
    return count


def require_timeout(value: object, argument: str = "timeout_sec") -> float:
    """Return a timeout in seconds, 0 or more (0 means no overall limit), or raise ``ValueError``."""
    seconds = _number(value, float, argument, "a number of seconds, 0 or more (0 for no limit)")
    if not 0 <= seconds < float("inf"):
        raise PSOpenAIConfigurationError(
            f"{argument} must be a number of seconds, 0 or more (0 for no limit), got {value!r}."
        )
    return seconds


def require_positive_seconds(value: object, argument: str) -> float:
    """Return a number of seconds above 0 (``poll_interval`` and the like), or raise naming ``argument``.

    NaN, infinities, booleans and text are refused: an infinite interval would never poll again.
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    raise PSOpenAIConfigurationError(f"{argument} must be a number of seconds above 0, got {value!r}.")


def require_epoch_seconds(value: object, argument: str) -> float:
    """Return a moment given in epoch seconds, or raise naming ``argument`` (NaN and infinities are no moment)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < float("inf"):
        return float(value)
    raise PSOpenAIConfigurationError(
        f"{argument} must be a datetime, an ISO 8601 text or epoch seconds (a finite number), got {value!r}."
    )


def as_epoch_seconds(value: object, argument: str) -> float:
    """Return a moment in epoch seconds, from a datetime, its ISO 8601 text or epoch seconds; else raise.

    A datetime or text without a time zone is UTC, as Airflow takes it (never this machine's local time);
    a number is epoch seconds (UTC), finite.

    :raises PSOpenAIConfigurationError: Naming ``argument`` and what it got.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value.strip())
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return require_epoch_seconds(value, argument)
    raise PSOpenAIConfigurationError(
        f"{argument} must be a datetime, an ISO 8601 text or epoch seconds, got {value!r:.100}."
    )


_FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def require_flag(value: object, argument: str = "coalesce_polling") -> bool:
    """Return a yes/no setting given as a boolean or as its text (a connection extra), or raise ``ValueError``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[value.strip().lower()]
    raise PSOpenAIConfigurationError(f"{argument} must be true or false, got {value!r}.")


def _number(value: object, kind: type[_Number], argument: str, expected: str) -> _Number:
    """Convert a number, or its text from a template or a connection extra; booleans are refused."""
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = kind(value)
        except (ValueError, OverflowError):  # int(float("inf")) overflows
            pass
        else:
            if not isinstance(value, float) or number == value:  # 1.5 is not a retry count
                return number
    raise PSOpenAIConfigurationError(f"{argument} must be {expected}, got {value!r}.")


def preview(value: object, max_chars: int = 80) -> str:
    """Return ``value``'s repr, cut to ``max_chars`` characters, for an error message."""
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def as_seconds(value: float | timedelta | None, argument: str) -> float | None:
    """Return a duration given in seconds or as a timedelta, in seconds (None stays None).

    :raises ValueError: Naming ``argument``, for anything but a number or timedelta above 0.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = float("nan")
    if seconds == 0:
        # Unlike timeout_sec=0 (no limit), a limit of 0 would end every wait at once.
        raise PSOpenAIConfigurationError(
            f"{argument}=0 would end the wait at once. For no limit of its own, leave {argument} out (None): "
            "the wait is then bounded by timeout_sec when above 0, else by execution_timeout, else not at all; "
            "otherwise give a number of seconds above 0."
        )
    if not 0 < seconds < float("inf"):
        raise PSOpenAIConfigurationError(
            f"{argument} must be a number of seconds above 0 or a timedelta, got {value!r}."
        )
    return seconds
