"""The OpenAI endpoints the emulator serves, under ``/v1``, Azure's ``/openai`` and ``/openai/v1``."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from airflow_psopenai.resources import ASSISTANTS_BETA_HEADERS
from airflow_psopenai.testing.messages import HttpRequest, api_error_reply, error_reply, json_reply
from airflow_psopenai.testing.state import ApiError, EmulatorState

if TYPE_CHECKING:
    from collections.abc import Mapping

API_ROOTS = frozenset({"v1", "openai"})
_BETA_HEADER, _BETA_VALUE = next(iter(ASSISTANTS_BETA_HEADERS.items()))
_BETA_HINT = f"Please try again by setting the header '{_BETA_HEADER}: {_BETA_VALUE}'."
_KEYS_URL = "https://platform.openai.com/account/api-keys"


def is_api_path(segments: list[str]) -> bool:
    """Return True for a path under one of the API bases."""
    return bool(segments) and segments[0] in API_ROOTS


def mask_key(key: str) -> str:
    """Return ``key`` as OpenAI shows it in errors: at most the first 3 and last 4 characters."""
    if len(key) < 12:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _resource_path(request: HttpRequest) -> list[str] | Response:
    """Return the path segments after the API base, or the error of Azure's dated API without a version."""
    segments = request.segments
    if segments[0] == "v1":
        return segments[1:]
    if segments[1:2] == ["v1"]:
        return segments[2:]
    if "api-version" not in request.query:
        # Azure's dated API answers a call without api-version as an unknown resource.
        return error_reply(404, "Resource not found", code="404")
    return segments[1:]


def _page_size(query: Mapping[str, str]) -> int:
    raw = query.get("limit", "20")
    try:
        page_size = int(raw)
    except ValueError:
        raise ApiError(
            400, "Invalid type for 'limit': expected an integer.", param="limit", code="invalid_type"
        ) from None
    if page_size < 1:
        raise ApiError(
            400,
            f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {page_size} instead.",
            param="limit",
            code="integer_below_min_value",
        )
    if page_size > 100:
        raise ApiError(
            400,
            f"Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {page_size} instead.",
            param="limit",
            code="integer_above_max_value",
        )
    return page_size


class OpenAIApi:
    """Authenticate, route and answer one API request from the state.

    :param state: The objects served.
    :param api_key: The only key accepted, as ``Authorization: Bearer`` or ``api-key``.
    """

    def __init__(self, state: EmulatorState, api_key: str) -> None:
        """Serve ``state`` to holders of ``api_key``."""
        self.state = state
        self.api_key = api_key

    def handle(self, request: HttpRequest) -> Response:
        """Return the answer to a request whose path is under an API base."""
        rest = _resource_path(request)
        if isinstance(rest, Response):
            return rest
        try:
            self._authenticate(request)
            return json_reply(200, self._route(request, rest))
        except ApiError as error:
            return api_error_reply(error)

    def _authenticate(self, request: HttpRequest) -> None:
        key = request.header("api-key")
        if key is None:
            scheme, _, token = (request.header("authorization") or "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
                "username) if you're accessing the API from your browser and are prompted for a username and "
                f"password. You can obtain an API key from {_KEYS_URL}.",
            )
        if not secrets.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(
                401,
                f"Incorrect API key provided: {mask_key(key)}. You can find your API key at {_KEYS_URL}.",
                code="invalid_api_key",
            )

    def _route(self, request: HttpRequest, rest: list[str]) -> dict[str, object]:
        state = self.state
        match request.method, rest:
            case "POST", ["batches"]:
                return self._create_batch(request)
            case "GET", ["batches"]:
                return state.list_batches(_page_size(request.query), request.query.get("after"))
            case "GET", ["batches", batch_id]:
                return state.get_batch(batch_id)
            case "POST", ["batches", batch_id, "cancel"]:
                return state.cancel_batch(batch_id)
            case "GET", ["threads", thread_id, "runs", run_id]:
                self._check_beta(request)
                return state.get_thread_run(thread_id, run_id)
            case "POST", ["threads", thread_id, "runs", run_id, "cancel"]:
                self._check_beta(request)
                return state.cancel_thread_run(thread_id, run_id)
            case "GET", ["responses", response_id]:
                return state.get_response(response_id)
            case "POST", ["responses", response_id, "cancel"]:
                return state.cancel_response(response_id)
            case "POST", ["fine_tuning", "jobs"]:
                return self._create_fine_tuning_job(request)
            case "GET", ["fine_tuning", "jobs"]:
                return state.list_fine_tuning_jobs(
                    _page_size(request.query), request.query.get("after"), _metadata_filter(request.query)
                )
            case "GET", ["fine_tuning", "jobs", job_id]:
                return state.get_fine_tuning_job(job_id)
            case "POST", ["fine_tuning", "jobs", job_id, "cancel"]:
                return state.cancel_fine_tuning_job(job_id)
            case "POST", ["evals", eval_id, "runs"]:
                return self._create_eval_run(request, eval_id)
            case "GET", ["evals", eval_id, "runs"]:
                return state.list_eval_runs(eval_id, _page_size(request.query), request.query.get("after"))
            case "GET", ["evals", eval_id, "runs", run_id]:
                return state.get_eval_run(eval_id, run_id)
            # The spec cancels an eval run with a POST to the run; the official SDK posts to .../cancel.
            case "POST", ["evals", eval_id, "runs", run_id] | ["evals", eval_id, "runs", run_id, "cancel"]:
                return state.cancel_eval_run(eval_id, run_id)
            case "POST", ["vector_stores", vector_store_id, "file_batches"]:
                return self._create_file_batch(request, vector_store_id)
            case "GET", ["vector_stores", vector_store_id, "file_batches", batch_id]:
                return state.get_vector_store_file_batch(vector_store_id, batch_id)
            case "POST", ["vector_stores", vector_store_id, "file_batches", batch_id, "cancel"]:
                return state.cancel_vector_store_file_batch(vector_store_id, batch_id)
        raise ApiError(404, f"Invalid URL ({request.method} {request.raw_path})")

    @staticmethod
    def _check_beta(request: HttpRequest) -> None:
        values = [value.strip() for value in (request.header(_BETA_HEADER.lower()) or "").split(",")]
        if _BETA_VALUE in values:
            return
        if any(value.startswith("assistants=") for value in values):
            message = f"The v1 Assistants API has been deprecated. {_BETA_HINT}"
        else:
            message = f"You must provide the '{_BETA_HEADER}' header to access the Assistants API. {_BETA_HINT}"
        raise ApiError(400, message, code="invalid_beta")

    def _create_batch(self, request: HttpRequest) -> dict[str, object]:
        body = _json_object(request, ("input_file_id", "endpoint", "completion_window"))
        metadata = _metadata(body)
        # A new batch would validate its input file first; the emulator has no files to read.
        return self.state.create_batch(
            "in_progress",
            metadata=metadata,
            endpoint=body["endpoint"],
            input_file_id=body["input_file_id"],
            completion_window=body["completion_window"],
        )

    def _create_fine_tuning_job(self, request: HttpRequest) -> dict[str, object]:
        body = _json_object(request, ("model", "training_file"))
        options = {name: body[name] for name in JOB_OPTIONS if body.get(name) is not None}
        # A new job validates its files first; the emulator has no files to read.
        return self.state.create_fine_tuning_job(
            "validating_files",
            metadata=_metadata(body),
            model=body["model"],
            training_file=body["training_file"],
            **options,
        )

    def _create_eval_run(self, request: HttpRequest, eval_id: str) -> dict[str, object]:
        body = _json_object(request, ())
        data_source = body.get("data_source")
        if not isinstance(data_source, dict):
            raise ApiError(
                400,
                "Missing required parameter: 'data_source'.",
                param="data_source",
                code="missing_required_parameter",
            )
        options = {name: body[name] for name in ("name", "model") if isinstance(body.get(name), str)}
        return self.state.create_eval_run(
            eval_id, "queued", metadata=_metadata(body), data_source=data_source, **options
        )

    def _create_file_batch(self, request: HttpRequest, vector_store_id: str) -> dict[str, object]:
        body = _json_object(request, ())
        files = body.get("file_ids", body.get("files"))
        if not isinstance(files, list) or not files:
            raise ApiError(
                400, "Missing required parameter: 'file_ids'.", param="file_ids", code="missing_required_parameter"
            )
        return self.state.create_vector_store_file_batch(vector_store_id, files=len(files))


# The create parameters of a fine-tuning job besides model and training_file that the emulator keeps.
JOB_OPTIONS = ("validation_file", "suffix", "seed", "method", "integrations")


def _json_object(request: HttpRequest, required_strings: tuple[str, ...]) -> dict[str, Any]:
    """Return the request's JSON object, with each of ``required_strings`` present and a string."""
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not "
            "valid JSON.)",
        )
    for name in required_strings:
        if name not in body:
            raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
        if not isinstance(body[name], str):
            raise ApiError(400, f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type")
    return body


def _metadata(body: Mapping[str, Any]) -> dict[str, str] | None:
    """Return the body's ``metadata``: an object of strings, or None."""
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(value, str) for value in metadata.values())
    ):
        raise ApiError(400, "Invalid 'metadata': expected an object of strings.", param="metadata", code="invalid_type")
    return metadata


def _metadata_filter(query: Mapping[str, str]) -> dict[str, str]:
    """Return the list's ``metadata[key]=value`` filter."""
    return {
        key[len("metadata[") : -1]: value
        for key, value in query.items()
        if key.startswith("metadata[") and key.endswith("]")
    }
