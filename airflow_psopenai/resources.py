"""What this provider knows about each cancellable OpenAI resource, in one table.

Operators, sensors, triggers, the hook and the emulator read paths, statuses, headers and ID fields
from here. A new cancellable resource is one more :class:`CancellableResource` entry in
:data:`RESOURCES`.

This module imports nothing but the standard library: operators import it at DAG-parse time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Mapping

ASSISTANTS_BETA_HEADERS: Mapping[str, str] = {"OpenAI-Beta": "assistants=v2"}


def _path_segment(value: str) -> str:
    """Percent-encode one ID as a single path segment.

    ``quote`` leaves dots alone, and clients resolve a ``.`` or ``..`` segment before sending, so
    those are encoded too: the ID is then looked up, never used to climb the path.
    """
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in {".", ".."} else segment


@dataclass(frozen=True)
class IdKind:
    """A kind of OpenAI ID, known by its prefix, and what to do with it.

    :param prefix: How the API's IDs of this kind begin (``resp_``).
    :param what: The object, in words (``a response``).
    :param use: What to pass it to instead (``use StopResponseOperator(response_id=...)``).
    """

    prefix: str
    what: str
    use: str


#: The prefixes of the API's IDs (the OpenAPI spec's examples), longest first where one begins another.
ID_KINDS: tuple[IdKind, ...] = (
    IdKind("batch_", "a batch", "use StopBatchOperator(batch_id=...)"),
    IdKind("resp_", "a response", "use StopResponseOperator(response_id=...)"),
    IdKind("run_", "a thread run", "use StopThreadRunOperator(thread_id=..., run_id=...)"),
    IdKind("thread_", "a thread", "use StopThreadRunOperator(thread_id=..., run_id=...) with the ID of its run"),
    IdKind("msg_", "a thread message", "a message is not cancelled: give the IDs of the run that writes it"),
    IdKind("asst_", "an assistant", "an assistant is not cancelled: give the IDs of its thread run"),
    IdKind("ftjob-", "a fine-tuning job", "use StopFineTuningJobOperator(fine_tuning_job_id=...)"),
    IdKind("evalrun_", "an eval run", "use StopEvalRunOperator(eval_id=..., run_id=...)"),
    IdKind("eval_", "an eval", "use StopEvalRunOperator(eval_id=..., run_id=...) with the ID of its run"),
    IdKind(
        "vsfb_", "a vector store file batch", "use StopVectorStoreFileBatchOperator(vector_store_id=..., batch_id=...)"
    ),
    IdKind(
        "vs_",
        "a vector store",
        "use StopVectorStoreFileBatchOperator(vector_store_id=..., batch_id=...) with the ID of its file batch",
    ),
    IdKind("file-", "a file", "give the ID of the batch made from it"),
)


def id_kind(value: str) -> IdKind | None:
    """Return the kind whose known prefix ``value`` begins with, or None (a gateway's or emulator's own ID)."""
    return next((kind for kind in ID_KINDS if value.startswith(kind.prefix)), None)


@dataclass(frozen=True)
class CancellableResource:
    """One kind of OpenAI object that can be retrieved, cancelled and waited on.

    :param name: Stable key of the entry (also what triggers serialise).
    :param label: Word used in messages, as the PSOpenAI cmdlets say it ("batch", "run").
    :param object_type: Value of the ``object`` field of the API's answers.
    :param id_fields: Argument names of the IDs, in path order (``thread_id``, ``run_id``).
    :param object_keys: For each ID field, the key of the object that holds it (PSOpenAI's InputObject).
    :param object_arg: Argument name under which operators accept a whole object.
    :param path_template: Path relative to the API base; ``{field}`` placeholders are percent-encoded.
    :param statuses: Every status the API documents.
    :param cancellable: Statuses in which a cancel is sent without ``force``.
    :param settled: Statuses in which a wait after a cancel ends.
    :param cancel_requested: Statuses that show a cancel went through (``cancelling``, ``cancelled``).
    :param cancel_requested_at: Fields of the object holding when its cancel was requested or done (epoch
        seconds), if the API has any.
    :param headers: Extra headers the API requires on every call for this resource.
    :param assistants_api: True for the Assistants API (shut down on api.openai.com on 2026-08-26).
    :param description_template: How messages name one object, from its IDs.
    :param console_url: Page of the object on platform.openai.com, when there is one.
    :param cancel_not_found: What a 404 from the cancel endpoint means besides an unknown ID, if anything.
    :param id_prefixes: For each ID field, the prefix of the API's IDs of that kind (see :data:`ID_KINDS`).
    :param list_path: The account-wide list of these objects (newest first, ``limit`` up to 100, ``after``
        cursor), whose items are the objects a retrieve returns; None when there is none. Waits on
        objects with a list poll through it together (see ``waiting/status_board.py``).
    :param list_filters_metadata: The list takes ``metadata[key]=value`` and the server filters by it.
    :param cancel_method: HTTP method of the cancel.
    :param cancel_suffix: What the cancel's path adds to the object's path (empty: the object itself).
    :param cancelled_status: How the API spells the status of a cancelled object.
    :param cost_fields: The fields of a settled object that say what ran (and was billed).
    """

    name: str
    label: str
    object_type: str
    id_fields: tuple[str, ...]
    object_keys: Mapping[str, str]
    object_arg: str
    path_template: str
    statuses: frozenset[str]
    cancellable: frozenset[str]
    settled: frozenset[str]
    cancel_requested: frozenset[str]
    description_template: str
    cancel_requested_at: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    assistants_api: bool = False
    console_url: str | None = None
    cancel_not_found: str | None = None
    list_path: str | None = None
    id_prefixes: Mapping[str, str] = field(default_factory=dict)
    list_filters_metadata: bool = False
    cancel_method: str = "POST"
    cancel_suffix: str = "/cancel"
    cancelled_status: str = "cancelled"
    cost_fields: tuple[str, ...] = ()

    def path(self, ids: Mapping[str, str]) -> str:
        """Return the object's path with every ID percent-encoded (``/``, ``?``, ``#`` and ``..`` included)."""
        return self.path_template.format(**self._encoded(ids))

    def cancel_path(self, ids: Mapping[str, str]) -> str:
        """Return the path of the object's cancel endpoint."""
        return self.path(ids) + self.cancel_suffix

    def console_page(self, ids: Mapping[str, str]) -> str | None:
        """Return the object's page on platform.openai.com (IDs percent-encoded), if it has one."""
        return None if self.console_url is None else self.console_url.format(**self._encoded(ids))

    def _encoded(self, ids: Mapping[str, str]) -> dict[str, str]:
        return {name: _path_segment(ids[name]) for name in self.id_fields}

    def describe(self, ids: Mapping[str, str]) -> str:
        """Return a short human description such as ``run 'run_1' of thread 'thread_2'``."""
        return self.description_template.format(**ids)

    def kind_of_foreign_id(self, id_field: str, value: str) -> IdKind | None:
        """Return the kind of ``value`` when its prefix is another kind's than ``id_field``'s, else None."""
        kind = id_kind(value)
        return None if kind is None or kind.prefix == self.id_prefixes.get(id_field) else kind

    def ids_from_object(self, obj: Mapping[str, object]) -> dict[str, object]:
        """Return the ID fields as found in an object returned by the API (values not yet validated)."""
        return {name: obj.get(key) for name, key in self.object_keys.items()}

    def what_ran(self, obj: Mapping[str, Any]) -> str:
        """Return what a settled object says ran, e.g. ``request_counts {"total": 10, ...}``; '' if it says nothing."""
        parts = [
            f"{name} {json.dumps(obj[name], sort_keys=True, default=str)}"
            for name in self.cost_fields
            if obj.get(name) is not None
        ]
        return "; ".join(parts)

    @staticmethod
    def normalise_status(status: object) -> str:
        """Return a status in lower case: older Azure answers capitalise them ("Validating")."""
        return str(status).strip().lower()


BATCH = CancellableResource(
    name="batch",
    label="batch",
    object_type="batch",
    id_fields=("batch_id",),
    object_keys={"batch_id": "id"},
    object_arg="batch",
    path_template="/batches/{batch_id}",
    statuses=frozenset(
        {
            "validating",
            "failed",
            "in_progress",
            "finalizing",
            "completed",
            "expired",
            "cancelling",
            "cancelled",
        }
    ),
    cancellable=frozenset({"validating", "in_progress", "finalizing"}),
    settled=frozenset({"cancelled", "completed", "failed", "expired"}),
    cancel_requested=frozenset({"cancelling", "cancelled"}),
    cancel_requested_at=("cancelling_at", "cancelled_at"),
    description_template="batch {batch_id!r}",
    console_url="https://platform.openai.com/batches/{batch_id}",
    list_path="/batches",
    id_prefixes={"batch_id": "batch_"},
    cost_fields=("request_counts", "usage"),
)

THREAD_RUN = CancellableResource(
    name="thread_run",
    label="run",
    object_type="thread.run",
    id_fields=("thread_id", "run_id"),
    object_keys={"thread_id": "thread_id", "run_id": "id"},
    object_arg="run",
    path_template="/threads/{thread_id}/runs/{run_id}",
    statuses=frozenset(
        {
            "queued",
            "in_progress",
            "requires_action",
            "cancelling",
            "cancelled",
            "failed",
            "completed",
            "incomplete",
            "expired",
        }
    ),
    cancellable=frozenset({"queued", "in_progress", "requires_action"}),
    settled=frozenset({"cancelled", "completed", "failed", "expired", "incomplete"}),
    cancel_requested=frozenset({"cancelling", "cancelled"}),
    cancel_requested_at=("cancelled_at",),  # a run has no time of its `cancelling`
    description_template="run {run_id!r} of thread {thread_id!r}",
    headers=ASSISTANTS_BETA_HEADERS,
    assistants_api=True,
    id_prefixes={"thread_id": "thread_", "run_id": "run_"},
    cost_fields=("usage",),
)

# Background responses are the successor of thread runs; the API has no `cancelling` state for them.
RESPONSE = CancellableResource(
    name="response",
    label="response",
    object_type="response",
    id_fields=("response_id",),
    object_keys={"response_id": "id"},
    object_arg="response",
    path_template="/responses/{response_id}",
    statuses=frozenset({"queued", "in_progress", "completed", "failed", "cancelled", "incomplete"}),
    cancellable=frozenset({"queued", "in_progress"}),
    settled=frozenset({"cancelled", "completed", "failed", "incomplete"}),
    cancel_requested=frozenset({"cancelled"}),
    description_template="response {response_id!r}",
    cancel_not_found="only responses created with background=true can be cancelled",
    id_prefixes={"response_id": "resp_"},
    cost_fields=("usage",),
)

# A cancelled job is billed for the tokens trained so far; the API has no `cancelling` state: a cancel is
# `cancelled` at once (or the job already ended). The list filters by metadata on the server.
FINE_TUNING_JOB = CancellableResource(
    name="fine_tuning_job",
    label="fine-tuning job",
    object_type="fine_tuning.job",
    id_fields=("fine_tuning_job_id",),
    object_keys={"fine_tuning_job_id": "id"},
    object_arg="fine_tuning_job",
    path_template="/fine_tuning/jobs/{fine_tuning_job_id}",
    statuses=frozenset({"validating_files", "queued", "running", "succeeded", "failed", "cancelled"}),
    cancellable=frozenset({"validating_files", "queued", "running"}),
    settled=frozenset({"succeeded", "failed", "cancelled"}),
    cancel_requested=frozenset({"cancelled"}),
    description_template="fine-tuning job {fine_tuning_job_id!r}",
    console_url="https://platform.openai.com/finetune/{fine_tuning_job_id}",
    list_path="/fine_tuning/jobs",
    list_filters_metadata=True,
    cost_fields=("trained_tokens",),
    id_prefixes={"fine_tuning_job_id": "ftjob-"},
)

# An eval run is cancelled by a POST to the run itself, and the API spells its status `canceled`. Its runs
# are listed per eval only: it is cancelled by ID.
EVAL_RUN = CancellableResource(
    name="eval_run",
    label="eval run",
    object_type="eval.run",
    id_fields=("eval_id", "run_id"),
    object_keys={"eval_id": "eval_id", "run_id": "id"},
    object_arg="eval_run",
    path_template="/evals/{eval_id}/runs/{run_id}",
    statuses=frozenset({"queued", "in_progress", "completed", "failed", "canceled"}),
    cancellable=frozenset({"queued", "in_progress"}),
    settled=frozenset({"completed", "failed", "canceled"}),
    cancel_requested=frozenset({"canceled"}),
    description_template="run {run_id!r} of eval {eval_id!r}",
    cancel_suffix="",
    cancelled_status="canceled",
    cost_fields=("result_counts",),
    id_prefixes={"eval_id": "eval_", "run_id": "evalrun_"},
)

# A vector store's file batch has no metadata and no account-wide list: it is cancelled by ID.
VECTOR_STORE_FILE_BATCH = CancellableResource(
    name="vector_store_file_batch",
    label="vector store file batch",
    object_type="vector_store.files_batch",
    id_fields=("vector_store_id", "batch_id"),
    object_keys={"vector_store_id": "vector_store_id", "batch_id": "id"},
    object_arg="file_batch",
    path_template="/vector_stores/{vector_store_id}/file_batches/{batch_id}",
    statuses=frozenset({"in_progress", "completed", "cancelled", "failed"}),
    cancellable=frozenset({"in_progress"}),
    settled=frozenset({"completed", "cancelled", "failed"}),
    cancel_requested=frozenset({"cancelled"}),
    description_template="file batch {batch_id!r} of vector store {vector_store_id!r}",
    cost_fields=("file_counts",),
    id_prefixes={"vector_store_id": "vs_", "batch_id": "vsfb_"},
)

#: Every cancellable resource, by its ``name``.
RESOURCES: Mapping[str, CancellableResource] = {
    r.name: r for r in (BATCH, THREAD_RUN, RESPONSE, FINE_TUNING_JOB, EVAL_RUN, VECTOR_STORE_FILE_BATCH)
}

CANCELLED = "cancelled"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """Return a count with its noun, as every message words one: ``1 batch``, ``2 batches``, ``0 cancels``.

    :param plural: The plural when it is not ``noun`` + ``es`` (after s, x, ch, sh) or ``noun`` + ``s``.
    """
    if count == 1:
        return f"1 {noun}"
    if plural is None:
        plural = noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{count} {plural}"


def status_of(obj: Mapping[str, Any]) -> str:
    """Return an object's status, normalised (lower case)."""
    return CancellableResource.normalise_status(obj.get("status"))


def has_status(obj: Mapping[str, Any]) -> bool:
    """Return whether an object says its status at all: a list item without one is never taken as a status."""
    status = obj.get("status")
    return isinstance(status, str) and bool(status.strip())
