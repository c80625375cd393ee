"""The IDs of the object a task works on, from its ID arguments or from an object the API returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.rendered import parse_rendered_text
from airflow_psopenai.client.validation import preview, require_id, require_id_of
from airflow_psopenai.exceptions import PSOpenAIConfigurationError

if TYPE_CHECKING:
    from airflow_psopenai.resources import CancellableResource


def ids_from_arguments(resource: CancellableResource, given: Mapping[str, object], obj: object) -> dict[str, str]:
    """Return validated IDs from the ID arguments or from an object such as the API returns.

    :param resource: The resource the IDs belong to.
    :param given: The ID arguments as rendered (``{"batch_id": ...}``); None where not given.
    :param obj: The object argument as rendered (a dict, or its JSON or Python-literal text), or None.
    """
    any_id_given = any(value is not None for value in given.values())
    if obj is None:
        if not any_id_given:
            names = " and ".join(resource.id_fields)
            raise PSOpenAIConfigurationError(
                f"{names} is None and {resource.object_arg} is not given: give the ID, check that the "
                "template or XCom it comes from returns one, or pass "
                f"{resource.object_arg}= with an object returned by the API."
            )
        return {name: require_id_of(resource, name, given.get(name)) for name in resource.id_fields}
    if any_id_given:
        raise PSOpenAIConfigurationError(
            f"Give either {resource.object_arg}= or {' and '.join(resource.id_fields)}, not both."
        )
    parsed = _object_as_dict(resource, obj)
    found = resource.ids_from_object(parsed)
    return {
        name: require_id_of(resource, name, found[name], f"{resource.object_arg}[{resource.object_keys[name]!r}]")
        for name in resource.id_fields
    }


def rendered_at_run_time(value: object) -> bool:
    """Return whether Airflow fills ``value`` in when the task runs: a Jinja template or an XComArg, anywhere in it."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list | tuple | set):
        return any(rendered_at_run_time(item) for item in value)
    if isinstance(value, Mapping):
        return any(rendered_at_run_time(item) for item in value.values())
    # An XComArg (or anything Airflow resolves as one) without importing Airflow here.
    return callable(getattr(value, "resolve", None)) and callable(getattr(value, "iter_references", None))


def check_literal_ids(resource: CancellableResource, given: Mapping[str, object], obj: object) -> None:
    """Refuse, when the task is built, the ID arguments that are wrong whatever the run brings.

    The checks and messages of :func:`ids_from_arguments`, on the values as written in the DAG: a
    list for one ID (a list renders to a list, whatever its items), an empty ID, no ID at all, an ID
    and an object both. A value that a template or an XComArg gives is left to the run.

    :param resource: The resource the IDs belong to.
    :param given: The ID arguments as written (``{"batch_id": ...}``).
    :param obj: The object argument as written, or None.
    """
    for name, value in given.items():
        if isinstance(value, list | tuple | set):
            require_id(name, value)
    if any(rendered_at_run_time(value) for value in (*given.values(), obj)):
        for name, value in given.items():
            if value is not None and not rendered_at_run_time(value):
                require_id_of(resource, name, value)
        return
    ids_from_arguments(resource, given, obj)


def _object_as_dict(resource: CancellableResource, obj: object) -> dict[str, Any]:
    if isinstance(obj, str):
        obj = _parse_object_text(resource, obj)
    if not isinstance(obj, Mapping):
        raise PSOpenAIConfigurationError(
            f"{resource.object_arg} must be an object (dict) as returned by the API, got "
            f"{type(obj).__name__} {preview(obj)}."
        )
    missing = [key for key in resource.object_keys.values() if key not in obj]
    if missing:
        raise PSOpenAIConfigurationError(
            f"{resource.object_arg} has no {' or '.join(repr(k) for k in missing)} key "
            f"(got keys {sorted(obj)[:10]}): pass the {resource.label} object the API returned."
        )
    return dict(obj)


def _parse_object_text(resource: CancellableResource, text: str) -> object:
    """Read an object that a non-native Jinja template rendered to text."""
    parsed = parse_rendered_text(text)
    if parsed is not None:
        return parsed
    raise PSOpenAIConfigurationError(
        f"{resource.object_arg} rendered to text that is not an object: {preview(text)}. Pass the "
        "XComArg itself (task.output), or set render_template_as_native_obj=True on the DAG."
    )
