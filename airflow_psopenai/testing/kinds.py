"""Fine-tuning jobs, eval runs and vector store file batches: the emulator's records and their rules.

None of them has a ``cancelling`` status: a cancel takes effect at once, unless the object was
created with ``race_to``, when the cancel is accepted but the object goes on and ends in ``race_to``
``cancel_delay`` seconds later (it was about to end). Like the other objects, they never move by
themselves otherwise; what they report of their work (``trained_tokens``, ``result_counts``,
``file_counts``) grows with the clock while they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_psopenai.resources import EVAL_RUN, FINE_TUNING_JOB, VECTOR_STORE_FILE_BATCH
from airflow_psopenai.testing.objects import TrackedObject, new_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_psopenai.resources import CancellableResource

#: How fast a running job trains, and how many tokens its training file holds.
TRAINED_TOKENS_PER_SECOND = 1000
TRAINING_TOKENS = 120_000
#: How fast a running eval run grades its items, and a vector store file batch ingests its files.
EVAL_ITEMS_PER_SECOND = 2.0
FILES_PER_SECOND = 1.0
ORGANIZATION_ID = "org-emulator"


def _timestamp(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass
class WorkingObject(TrackedObject):
    """An object whose cancel is at once, or loses a race to the end it was about to reach.

    :param working: The status in which its work goes on (and grows with the clock).
    """

    working: str = ""
    # Units of work done when it stopped; None while it works.
    done_frozen: int | None = None
    units: int = 0
    units_per_second: float = 1.0

    def done(self, now: float) -> int:
        """Return how much of its work is done by ``now``."""
        if self.done_frozen is not None:
            return self.done_frozen
        started = self.times.get(f"{self.working}_at")
        if self.status != self.working or started is None:
            return 0
        return min(self.units, math.floor(max(0.0, now - started) * self.units_per_second))

    def start(self, status: str, now: float, resource: CancellableResource) -> None:
        """Set what an object created in ``status`` has already been through."""
        if status == self.working or status in resource.settled:
            self.times[f"{self.working}_at"] = now
        if status in resource.settled:
            self.times[f"{status}_at"] = now
            self.done_frozen = self.units if status == self.end_of_work else 0

    @property
    def end_of_work(self) -> str:
        """The status of an object that did all its work."""
        raise NotImplementedError

    def render(self, now: float) -> dict[str, object]:
        """Return the object as the API shows it at ``now``."""
        raise NotImplementedError

    def cancel(self, now: float, delay: float, resource: CancellableResource) -> None:
        """Cancel now, or (with ``race_to``) accept the cancel and end in ``race_to`` after ``delay``."""
        if self.race_to is not None:
            if self.settle_at is None:
                self.settle_at = now + delay
            return
        self.done_frozen = self.done(now)
        self.finish(resource.cancelled_status, now)

    def settle(self, now: float) -> None:
        """End a race once its time has come (the time it happened, not ``now``)."""
        if self.race_to is not None and self.settle_at is not None and now >= self.settle_at:
            at, self.settle_at = self.settle_at, None
            self.done_frozen = self.units if self.race_to == self.end_of_work else self.done(at)
            self.finish(self.race_to, at)
            self.race_to = None


@dataclass
class FineTuningJobObject(WorkingObject):
    model: str = "gpt-4o-mini-2024-07-18"
    training_file: str = ""
    validation_file: str | None = None
    metadata: dict[str, str] | None = None
    seed: int = 42
    suffix: str | None = None
    method: dict[str, object] | None = None
    integrations: list[object] | None = None

    @property
    def end_of_work(self) -> str:
        return "succeeded"

    def render(self, now: float) -> dict[str, object]:
        """Return the job as the API shows it at ``now``."""
        status = self.status
        finished = status in FINE_TUNING_JOB.settled
        trained = self.done(now) if status in ("running", *FINE_TUNING_JOB.settled) else None
        suffix = f":{self.suffix}" if self.suffix else ""
        method = self.method or {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": 3}
            },
        }
        return {
            "object": FINE_TUNING_JOB.object_type,
            "id": self.id,
            "model": self.model,
            "created_at": int(self.created),
            "finished_at": _timestamp(self.times.get(f"{status}_at")) if finished else None,
            "fine_tuned_model": f"ft:{self.model}:{ORGANIZATION_ID}{suffix}:{self.id[-8:]}"
            if status == "succeeded"
            else None,
            "organization_id": ORGANIZATION_ID,
            "result_files": [f"file-result{self.id[-8:]}"] if status == "succeeded" else [],
            "status": status,
            "validation_file": self.validation_file,
            "training_file": self.training_file,
            "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": "auto", "n_epochs": 3},
            "trained_tokens": trained,
            "error": (
                {"code": "invalid_training_file", "message": "The training file could not be read.", "param": None}
                if status == "failed"
                else None
            ),
            "integrations": self.integrations,
            "seed": self.seed,
            "estimated_finish": None if finished else int(self.created + self.units / self.units_per_second),
            "method": method,
            "metadata": self.metadata,
        }


@dataclass
class EvalRunObject(WorkingObject):
    eval_id: str = ""
    name: str = "emulated run"
    model: str = "gpt-4o-mini"
    metadata: dict[str, str] | None = None
    data_source: dict[str, object] = field(
        default_factory=lambda: {"type": "jsonl", "source": {"type": "file_id", "id": new_id("file-", 22)}}
    )

    @property
    def end_of_work(self) -> str:
        return "completed"

    def render(self, now: float) -> dict[str, object]:
        """Return the run as the API shows it at ``now``."""
        status = self.status
        graded = self.done(now)
        passed = graded - graded // 4
        return {
            "object": EVAL_RUN.object_type,
            "id": self.id,
            "eval_id": self.eval_id,
            "report_url": f"https://platform.openai.com/evaluations/{self.eval_id}?run_id={self.id}",
            "status": status,
            "model": self.model,
            "name": self.name,
            "created_at": int(self.created),
            "result_counts": {"total": self.units, "errored": 0, "failed": graded - passed, "passed": passed},
            "per_model_usage": None,
            "per_testing_criteria_results": None,
            "data_source": self.data_source,
            "error": {"code": "server_error", "message": "The run could not be graded."}
            if status == "failed"
            else None,
            "metadata": self.metadata if self.metadata is not None else {},
        }


@dataclass
class FileBatchObject(WorkingObject):
    vector_store_id: str = ""

    @property
    def end_of_work(self) -> str:
        return "completed"

    def render(self, now: float) -> dict[str, object]:
        """Return the file batch as the API shows it at ``now``."""
        done = self.done(now)
        left = self.units - done
        cancelled = left if self.status == VECTOR_STORE_FILE_BATCH.cancelled_status else 0
        failed = left if self.status == "failed" else 0
        return {
            "id": self.id,
            "object": VECTOR_STORE_FILE_BATCH.object_type,
            "created_at": int(self.created),
            "vector_store_id": self.vector_store_id,
            "status": self.status,
            "file_counts": {
                "in_progress": left - cancelled - failed,
                "completed": done,
                "failed": failed,
                "cancelled": cancelled,
                "total": self.units,
            },
        }


def check_kind_status(resource: CancellableResource, status: str, race_to: str | None) -> None:
    """Refuse a status the resource does not have, or a race to anything but one of its other ends."""
    if status not in resource.statuses:
        raise ValueError(f"Unknown {resource.label} status {status!r}; expected one of {sorted(resource.statuses)}.")
    ends = resource.settled - {resource.cancelled_status}
    if race_to is not None and race_to not in ends:
        raise ValueError(f"race_to must be one of {sorted(ends)} or None, not {race_to!r}.")


def cannot_cancel_message(resource: CancellableResource, status: str) -> str:
    """Return the emulator's wording of a refused cancel, with the status quoted as the API quotes a batch's."""
    return f"Cannot cancel {resource.label} with status '{status}'."


def metadata_matches(held: Mapping[str, str] | None, wanted: Mapping[str, str]) -> bool:
    """Return whether ``held`` holds every pair of ``wanted`` (the list's ``metadata[k]=v`` filter)."""
    pairs = held or {}
    return all(pairs.get(key) == value for key, value in wanted.items())
