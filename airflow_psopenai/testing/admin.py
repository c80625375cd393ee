"""HTTP endpoints under ``/_emulator`` that drive an emulator running in another process.

No authentication: the emulator is a test tool bound to loopback by default.

============================================  ==============================================================
``POST /_emulator/batches``                   ``{status, race_to, total_requests, metadata, batch_id, schedule}``
                                              → batch
``POST /_emulator/batches/{id}/fail``         fail the batch now → batch
``/_emulator/batch_schedule``                 the default schedule of new batches: GET reads, POST sets, DELETE
                                              forgets it
``POST /_emulator/thread_runs``               ``{status, thread_id, race_to, run_id}`` → run
``POST /_emulator/responses``                 ``{status, background, response_id}`` → response
``GET /_emulator/journal?method=&path=``      journal entries (optionally filtered, ``path`` a glob)
``GET /_emulator/history/{object_id}``        ``[[epoch seconds, status], ...]``
``POST /_emulator/faults``                    ``{"fault": {...}, "method", "path", "times"}`` (scripted) or
                                              ``{"random": {"rate", "seed", "faults": [...], "method", "path"}}``
``DELETE /_emulator/faults``                  forget every fault
``POST /_emulator/reset``                     forget objects, faults and journal
``GET|POST /_emulator/settings``              ``{cancel_delay, latency}`` (POST sets those given)
============================================  ==============================================================

Every field is optional; a fault is :meth:`~airflow_psopenai.testing.faults.Fault.to_json`'s form, a
schedule ``BatchSchedule.to_json()``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_psopenai.testing.faults import Fault
from airflow_psopenai.testing.messages import HttpRequest, api_error_reply, error_reply, json_reply
from airflow_psopenai.testing.objects import BatchSchedule
from airflow_psopenai.testing.state import ApiError

if TYPE_CHECKING:
    from starlette.responses import Response

    from airflow_psopenai.testing.emulator import OpenAIEmulator

ADMIN_ROOT = "_emulator"

_Types = type | tuple[type, ...]
_Spec = Mapping[str, _Types]
_BATCH: _Spec = {
    "status": str,
    "race_to": str,
    "total_requests": int,
    "metadata": dict,
    "batch_id": str,
    "schedule": dict,
}
_SCHEDULE: _Spec = {
    "complete_after": (int, float),
    "finalize_seconds": (int, float),
    "validate_seconds": (int, float),
    "window_seconds": (int, float),
}
_RUN: _Spec = {"status": str, "thread_id": str, "race_to": str, "run_id": str}
_RESPONSE: _Spec = {"status": str, "background": bool, "response_id": str}
_SETTINGS: _Spec = {"cancel_delay": (int, float), "latency": (int, float)}
_SCRIPTED: _Spec = {"fault": dict, "method": str, "path": str, "times": int}
_RANDOM: _Spec = {"rate": (int, float), "seed": int, "faults": list, "method": str, "path": str}


def _fields(data: object, spec: Mapping[str, _Types]) -> dict[str, Any]:
    """Return the fields of a JSON object that are set, checked against ``spec`` (name → type).

    :raises ValueError: On anything but an object, an unknown field or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ValueError("Expected a JSON object.")
    unknown = set(data) - set(spec)
    if unknown:
        raise ValueError(f"Unknown field(s) {sorted(unknown)}; expected some of {sorted(spec)}.")
    fields = {name: value for name, value in data.items() if value is not None}
    for name, value in fields.items():
        # bool is an int subclass: a number field must not take true/false.
        if not isinstance(value, spec[name]) or (isinstance(value, bool) and spec[name] is not bool):
            raise ValueError(f"Field {name!r} has the wrong type: {value!r}.")
    return fields


class AdminApi:
    """Answer ``/_emulator`` requests by calling the emulator's Python API."""

    def __init__(self, emulator: OpenAIEmulator) -> None:
        """Drive ``emulator``."""
        self.emulator = emulator

    def handle(self, request: HttpRequest) -> Response:
        """Return the answer to a request whose path starts with ``/_emulator``."""
        try:
            return json_reply(200, self._route(request))
        except ApiError as error:
            return api_error_reply(error)
        except ValueError as error:
            return error_reply(400, str(error))

    def _route(self, request: HttpRequest) -> object:
        emulator = self.emulator
        match request.method, request.segments[1:]:
            case "POST", ["batches"]:
                fields = _fields(request.json(), _BATCH)
                if "schedule" in fields:
                    fields["schedule"] = _schedule(fields["schedule"])
                return emulator.create_batch(**fields)
            case "POST", ["batches", batch_id, "fail"]:
                return emulator.fail_batch(batch_id)
            case "POST", ["batch_schedule"]:
                emulator.batch_schedule = _schedule(request.json())
                return emulator.batch_schedule.to_json()
            case "DELETE", ["batch_schedule"]:
                emulator.batch_schedule = None
                return None
            case "GET", ["batch_schedule"]:
                schedule = emulator.batch_schedule
                return None if schedule is None else schedule.to_json()
            case "POST", ["thread_runs"]:
                return emulator.create_thread_run(**_fields(request.json(), _RUN))
            case "POST", ["responses"]:
                return emulator.create_response(**_fields(request.json(), _RESPONSE))
            case "GET", ["journal"]:
                query = request.query
                entries = emulator.requests(query.get("method"), query.get("path"))
                return [entry.to_json() for entry in entries]
            case "GET", ["history", object_id]:
                return emulator.status_history(object_id)
            case "POST", ["faults"]:
                self._add_faults(request.json())
                return {"ok": True}
            case "DELETE", ["faults"]:
                emulator.clear_faults()
                return {"ok": True}
            case "POST", ["reset"]:
                emulator.reset()
                return {"ok": True}
            case "POST", ["settings"]:
                for name, value in _fields(request.json(), _SETTINGS).items():
                    setattr(emulator, name, float(value))
                return self._settings()
            case "GET", ["settings"]:
                return self._settings()
        raise ApiError(404, f"Invalid URL ({request.method} {request.raw_path})")

    def _settings(self) -> dict[str, float]:
        return {"cancel_delay": self.emulator.cancel_delay, "latency": self.emulator.latency}

    def _add_faults(self, body: object) -> None:
        if isinstance(body, dict) and "random" in body and len(body) == 1:
            spec = _fields(body["random"], _RANDOM)
            if "rate" not in spec:
                raise ValueError("Random faults need a 'rate'.")
            faults = [_fault(item) for item in spec.pop("faults", [])]
            self.emulator.set_random_faults(faults=faults, **spec)
            return
        spec = _fields(body, _SCRIPTED)
        if "fault" not in spec:
            raise ValueError("Expected {'fault': {...}, ...} or {'random': {...}}.")
        self.emulator.add_fault(_fault(spec.pop("fault")), **spec)


def _schedule(data: object) -> BatchSchedule:
    return BatchSchedule(**_fields(data, _SCHEDULE))


def _fault(data: object) -> Fault:
    if not isinstance(data, dict):
        raise ValueError(f"A fault is a JSON object, not {data!r}.")
    return Fault.from_json(data)
