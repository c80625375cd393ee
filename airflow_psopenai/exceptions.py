"""Errors raised by this provider: each carries what a user needs to act on it, and never the API key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Mapping

ASSISTANTS_SHUTDOWN_NOTE = (
    "OpenAI shut the Assistants API (threads and runs) down on 2026-08-26, so api.openai.com no longer "
    "serves thread runs. Use the Responses API with background=true instead (cancel with "
    "POST /responses/{id}/cancel); thread runs can still be cancelled on servers that keep the "
    "Assistants API (self-hosted or OpenAI-compatible gateways)."
)


class PSOpenAIError(AirflowException):
    """Base class of every error this provider raises."""


class PSOpenAIConfigurationError(PSOpenAIError, ValueError):
    """A setting or argument is invalid; raised before any request is sent."""


class PSOpenAIEventError(PSOpenAIError, ValueError):
    """A deferred task resumed with an event this provider's trigger did not send (never taken as success)."""


class PSOpenAITransportError(PSOpenAIError):
    """The request did not get an HTTP answer: connect error, timeout, dropped connection.

    Retryable, but for a request this client refused to send (a local protocol error).

    :param lost_answer: Whether the request may have reached the server (its answer did not come back).
    """

    retry_after: float | None = None

    def __init__(self, message: str, *, retryable: bool = True, lost_answer: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.lost_answer = lost_answer


class PSOpenAIAPIError(PSOpenAIError):
    """The API answered with an error status.

    :param http_status: HTTP status.
    :param message: Text for people, already naming the object or connection involved.
    :param error_type: OpenAI's ``error.type``, when the body had one.
    :param code: OpenAI's ``error.code``, when the body had one.
    :param api_message: OpenAI's ``error.message`` as sent.
    :param request_id: The ``x-request-id`` response header (else a gateway's id of the request), to quote to support.
    :param retryable: Whether the retry policy may send the call again.
    :param retry_after: Delay the server asked for, in seconds, when it asked for one.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int,
        error_type: str | None = None,
        code: str | None = None,
        api_message: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        suffix = f" (HTTP {http_status}" + (f", request id {request_id})" if request_id else ")")
        super().__init__(message + suffix)
        self.http_status = http_status
        self.error_type = error_type
        self.code = code
        self.api_message = api_message
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after


class PSOpenAIAuthenticationError(PSOpenAIAPIError):
    """401: the key was refused."""


class PSOpenAINotFoundError(PSOpenAIAPIError):
    """404: the object, or the endpoint, does not exist."""


class PSOpenAIAssistantsShutdownError(PSOpenAINotFoundError):
    """404 from a thread-run endpoint of api.openai.com, where the Assistants API was shut down."""


class PSOpenAIRateLimitError(PSOpenAIAPIError):
    """429 rate limit: retryable after the server's delay."""


class PSOpenAIQuotaError(PSOpenAIAPIError):
    """429 ``insufficient_quota``: retrying cannot help until billing changes."""


class PSOpenAIServerError(PSOpenAIAPIError):
    """5xx from the API or a proxy in front of it."""


class PSOpenAIInvalidResponseError(PSOpenAIAPIError):
    """The body is not the JSON the API sends (an HTML page from a proxy, an empty body)."""


class PSOpenAICannotCancelError(PSOpenAIError, AirflowFailException):
    """The object is in a status that cannot be cancelled.

    Raised locally (without ``force``, after a retrieve) or from the API's 409/400 answer (with
    ``force``). ``status`` is the object's real status when it is known. An ``AirflowFailException``:
    a settled object stays settled, so an Airflow retry could only fail the same way.
    """

    def __init__(
        self,
        message: str,
        *,
        status: str | None,
        ids: Mapping[str, str],
        api_error: PSOpenAIAPIError | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.ids = dict(ids)
        self.api_error = api_error


class PSOpenAIUnexpectedStatusError(PSOpenAIError, AirflowFailException):
    """An object settled in a status other than the one waited for (a sensor's batch completed).

    An ``AirflowFailException``: a retry cannot change a settled object, and sensors turn it into a
    skip under ``soft_fail``.
    """

    def __init__(self, message: str, *, status: str, obj: Mapping[str, object]) -> None:
        super().__init__(message)
        self.status = status
        self.object = dict(obj)


class PSOpenAIWaitTimeoutError(PSOpenAIError):
    """The object did not settle before the wait's deadline."""


def answer_may_be_lost(error: BaseException) -> bool:
    """Return whether the API may have acted on a request whose answer is ``error``.

    A timeout, a dropped or garbled answer or a 5xx may come after the API acted; an API's own 4xx
    refusal, a connection never made or a request never sent may not.
    """
    return isinstance(error, PSOpenAIServerError | PSOpenAIInvalidResponseError) or (
        isinstance(error, PSOpenAITransportError) and error.lost_answer
    )
