"""The connection form of the ``psopenai`` type, declared once for every Airflow line.

Airflow 3.2 and later read it from the provider info (``conn-fields``, ``ui-field-behaviour``);
3.0 and 3.1 ask the hook (``get_connection_form_widgets``, ``get_ui_field_behaviour``). Both are
built from the declarations below. Plain data: ``get_provider_info`` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExtraField:
    """One field of the connection's extras.

    :param kind: ``string``, ``number``, ``integer`` or ``boolean``.
    :param choices: The values allowed, when there is a fixed list.
    :param minimum: Smallest number allowed.
    :param maximum: Largest number allowed.
    :param default: What the form shows before anything is entered: the hook's own default where the
        form would otherwise show it the other way (a boolean field left empty shows as off).
    """

    name: str
    label: str
    description: str
    kind: str = "string"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    default: bool | None = None

    def json_schema(self) -> dict[str, Any]:
        """Return the field's JSON schema, as ``conn-fields`` wants it (empty allowed)."""
        schema: dict[str, Any] = {"type": [self.kind, "null"]}
        if self.choices:
            schema["enum"] = [*self.choices, None]
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        return schema


EXTRA_FIELDS = (
    ExtraField("organization", "Organization", "Sent as OpenAI-Organization when set."),
    ExtraField("project", "Project", "Sent as OpenAI-Project when set."),
    ExtraField("api_type", "API type", "openai (default) or azure.", choices=("openai", "azure")),
    ExtraField(
        "auth_type",
        "Auth type",
        "api_key (default) or entra_id (Azure: the password is an Entra ID token).",
        choices=("api_key", "entra_id"),
    ),
    ExtraField("api_version", "Azure API version", "api-version query for Azure (default 2025-04-01-preview)."),
    ExtraField(
        "timeout_sec",
        "Timeout (seconds)",
        "Per-request limit, and the deadline of a wait without wait_timeout; 0 means no limit.",
        kind="number",
        minimum=0,
    ),
    ExtraField(
        "max_retry_count",
        "Max retry count",
        "Retries of a failed call (0 to 100, default 0).",
        kind="integer",
        minimum=0,
        maximum=100,
    ),
    ExtraField(
        "coalesce_polling",
        "Coalesce batch polls",
        "Waits read their batches from shared list pages (default true); false for a gateway without GET /batches.",
        kind="boolean",
        default=True,
    ),
)
HIDDEN_FIELDS = ("schema", "port", "login")
RELABELING = {"host": "API base", "password": "API key"}
PLACEHOLDERS = {
    "host": "https://api.openai.com/v1 (Azure: https://RESOURCE.openai.azure.com)",
    "password": "sk-... (or leave empty to use OPENAI_API_KEY)",
}


def provider_info_fields() -> dict[str, Any]:
    """Return ``conn-fields`` and ``ui-field-behaviour`` for the provider info (Airflow 3.2+)."""
    return {
        "ui-field-behaviour": {
            "hidden-fields": list(HIDDEN_FIELDS),
            "relabeling": dict(RELABELING),
            "placeholders": dict(PLACEHOLDERS),
        },
        "conn-fields": {
            field.name: {"label": field.label, "schema": field.json_schema(), "description": field.description}
            for field in EXTRA_FIELDS
        },
    }


def ui_field_behaviour() -> dict[str, Any]:
    """Return what ``get_ui_field_behaviour`` returns (Airflow 3.0 and 3.1)."""
    return {"hidden_fields": list(HIDDEN_FIELDS), "relabeling": dict(RELABELING), "placeholders": dict(PLACEHOLDERS)}


def form_widgets() -> dict[str, Any]:
    """Return what ``get_connection_form_widgets`` returns (Airflow 3.0 and 3.1): WTForms fields.

    Only the field classes Airflow accepts there (a number is a text field: the hook reads it as
    one), and no widget or translation from Flask-AppBuilder, which Airflow 3 does not install.

    :raises ImportError: Without WTForms (Airflow 3.0 then shows no extra fields, for any provider).
    """
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import Optional, any_of

    classes = {"integer": IntegerField, "boolean": BooleanField}
    widgets: dict[str, Any] = {}
    for field in EXTRA_FIELDS:
        field_class = classes.get(field.kind, StringField)
        validators = [Optional(), *([any_of(list(field.choices))] if field.choices else [])]
        widgets[field.name] = field_class(
            field.label, validators=validators, description=field.description, default=field.default
        )
    return widgets
