"""What the OpenAI page shows of each object: its own fields, and the run tags that tie it to a DAG run.

One :class:`Kind` per kind of object listed (its resource and the fields of its own worth showing):
another kind of object is one more entry. Values come from the API and go out as JSON; the page escapes
them when it renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_psopenai.resources import BATCH, CancellableResource, status_of
from airflow_psopenai.run_tags import DAG_ID_KEY, MAP_INDEX_KEY, RUN_ID_KEY, TASK_ID_KEY

if TYPE_CHECKING:
    from collections.abc import Mapping

# The tag of the Airflow deployment that launched an object, when its deployment tags them so.
DEPLOYMENT_KEY = "airflow_deployment"
# A batch still running: it may be cancelled, or its cancel is under way.
RUNNING_STATUSES = BATCH.cancellable | {"cancelling"}


@dataclass(frozen=True)
class Tags:
    """The run tags of one object (each None when it does not hold it)."""

    dag_id: str | None
    run_id: str | None
    task_id: str | None
    map_index: int | None
    deployment: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Tags:
        """Read the tags from an object's ``metadata`` (anything but text is no tag)."""
        metadata = obj.get("metadata")
        held: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}

        def text(key: str) -> str | None:
            value = held.get(key)
            return value if isinstance(value, str) and value else None

        map_index = text(MAP_INDEX_KEY)
        return cls(
            dag_id=text(DAG_ID_KEY),
            run_id=text(RUN_ID_KEY),
            task_id=text(TASK_ID_KEY),
            map_index=int(map_index) if map_index is not None and map_index.isdigit() else None,
            deployment=text(DEPLOYMENT_KEY),
        )


@dataclass(frozen=True)
class Kind:
    """One kind of object the page lists.

    :param resource: Its entry in the resource table.
    :param fields: Its own fields the page shows, as the API names them (missing ones are null).
    :param running: Statuses in which it still runs.
    """

    resource: CancellableResource
    fields: tuple[str, ...]
    running: frozenset[str]

    def item(self, obj: Mapping[str, Any], tags: Tags, *, can_cancel: bool, console: bool) -> dict[str, Any]:
        """Return what the page shows of ``obj``.

        :param can_cancel: Whether the asking user may cancel it and it is in a cancellable status.
        :param console: Whether to link its page on platform.openai.com (the API base is OpenAI's).
        """
        object_id = str(obj["id"])
        ids = {self.resource.id_fields[0]: object_id}
        return {
            "id": object_id,
            "kind": self.resource.name,
            "status": status_of(obj),
            "created_at": obj.get("created_at"),
            **{name: obj.get(name) for name in self.fields},
            "dag_id": tags.dag_id,
            "run_id": tags.run_id,
            "task_id": tags.task_id,
            "map_index": tags.map_index,
            "deployment": tags.deployment,
            "can_cancel": can_cancel and status_of(obj) in self.resource.cancellable,
            "console_url": self.resource.console_page(ids) if console else None,
        }


BATCHES = Kind(BATCH, ("endpoint", "model", "request_counts", "usage"), RUNNING_STATUSES)
