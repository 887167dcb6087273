"""Stopping an asyncio task within a grace period, so that one stuck part never blocks a process's shutdown.

``stop_task`` cancels a task and waits for it at most ``grace`` seconds; one that has not ended by then is left
behind with a WARNING naming it. Used by the runner for every part it starts and by parts that run tasks of their
own (the live followers). What does not live here: a stop that must wait for the task however long it takes (the
merge lease's work may not outlive the lease: ``merge.lease``).
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[None], grace: float = 10.0) -> None:
    """Cancel ``task`` and wait for it, at most ``grace`` seconds: a stuck part never blocks shutdown."""
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=grace)
    if not done:
        log.warning("%s did not stop within %.0f s; exiting without it", task.get_name(), grace)
