"""What one execution of a task instance knows of the objects its earlier tries created, so that a retry
takes them over instead of paying for them twice.

It reads the running task's context (``get_current_context``), and nothing of HTTP: the hook lists the
objects and says which one fits (``PSOpenAIHook.create_batch``; any other kind an earlier try may have
created goes through :meth:`TaskTry.take` the same way, under a name of its own).

An execution is one process running one try: a try run again (apache/airflow#67287) runs in another
process, and a retry has another try number, so each is an execution of its own, which takes over the
objects of the executions before it. What they created is listed once per execution and kind, at its
first call; each object is handed out once, the oldest first, so the n-th call of a try gets the n-th
object of the try before.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_psopenai.run_tags import MAP_INDEX_KEY, run_tags

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


@dataclass
class Earlier:
    """The objects earlier executions may have created, oldest first, and why the rest could not be looked at.

    :param objects: The candidates, oldest first.
    :param unread: Raised when no candidate fits: part of the list that could hold one was not read.
    """

    objects: list[dict[str, Any]] = field(default_factory=list)
    unread: Exception | None = None


class TaskTry:
    """The try of a task instance running now: its run tags, its DAG run's ``run_after``, what it took over."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        ti = context["ti"]
        self.tags = run_tags(context)
        # run_after does not move when the run is cleared (start_date does): a cleared task still finds
        # what its earlier tries created.
        self.run_after: object = getattr(context.get("dag_run"), "run_after", None)
        self._key = (os.getpid(), ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), ti.try_number)

    @staticmethod
    def own_tags(tags: Mapping[str, str]) -> dict[str, str | None]:
        """Return the metadata that marks this task instance's objects (``tags`` as the object carries them).

        A None value means the key is absent: an unmapped task's objects carry no map index, so it never
        takes over a mapped instance's.
        """
        return {**tags, MAP_INDEX_KEY: tags.get(MAP_INDEX_KEY)}

    def take(
        self, kind: str, list_earlier: Callable[[], Earlier], fits: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, Any] | None:
        """Return the oldest object of ``kind`` an earlier execution created that ``fits`` and is not taken yet.

        :param list_earlier: Lists the candidates, at this execution's first call for ``kind``.
        :raises Exception: ``Earlier.unread``, when nothing read fits and part of the list was not read.
        """
        with _CLAIMS.lock:
            execution = _CLAIMS.of(self._key)
            earlier = execution.earlier.get(kind)
            if earlier is None:
                earlier = execution.earlier[kind] = list_earlier()
            for item in earlier.objects:
                object_id = str(item.get("id"))
                if object_id not in execution.taken and fits(item):
                    execution.taken.add(object_id)
                    return item
            if earlier.unread is not None:
                raise earlier.unread
            return None


def current_try() -> TaskTry | None:
    """Return the try of the task running now, or None outside a task."""
    from airflow.providers.common.compat.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # no task is running (a script, a test, the DAG processor)
        return None
    return TaskTry(context)


class _Execution:
    """What one execution knows: the candidates of each kind, listed at its first call, and those it took."""

    def __init__(self, key: tuple[object, ...]) -> None:
        self.key = key
        self.earlier: dict[str, Earlier] = {}
        self.taken: set[str] = set()


class _Claims:
    """The execution of a task instance running in this process (a process runs one try at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._execution = _Execution(())

    def of(self, key: tuple[object, ...]) -> _Execution:
        """Return this process's execution ``key`` (forgetting any other)."""
        if self._execution.key != key:
            self._execution = _Execution(key)
        return self._execution


_CLAIMS = _Claims()

__all__ = ["Earlier", "TaskTry", "current_try"]
