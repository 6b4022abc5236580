"""The embedded stand-in for Pub/Sub's push: lease queued messages, process, then ack.

At least once, like Pub/Sub: a message is acknowledged only after `process` returned, so a
crash between the two delivers it again when its lease runs out (and dedup absorbs it).
A message that keeps failing is dead-lettered after `max_attempts` leases.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from meterline import logs
from meterline.adapters.embedded.sqlite_queue import QueuedMessage, SqliteQueue
from meterline.core.clock import now_us
from meterline.entrypoints.pubsub import log_processed
from meterline.services.process import ProcessService

_log = logs.get("worker")


@dataclass
class DrainStats:
    messages: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0
    dead_lettered: int = 0


def drain_once(queue: SqliteQueue, service: ProcessService, batch: int = 50, lease_seconds: float = 60.0) -> DrainStats:
    """Process one batch of available messages."""
    stats = DrainStats()
    for message in queue.lease(batch, lease_seconds):
        stats.messages += 1
        started = now_us()
        try:
            result = service.handle_message(message.data)
        except Exception as exc:  # noqa: BLE001 - any failure: give it back; the queue dead-letters it in the end
            stats.failed += 1
            dead = queue.nack(message.id, f"{type(exc).__name__}: {exc}")
            stats.dead_lettered += dead
            # One line per failed attempt, as the Pub/Sub function logs (with the stack trace).
            logs.failure(_log, "message dead-lettered after its last attempt" if dead else
                         "message failed; it will be delivered again", exc,
                         message_id=message.id, attempts=message.attempts)
            continue
        # A crash here redelivers the message after its lease; dedup makes that harmless.
        queue.ack(message.id)
        log_processed(_log, result, message.id, _published_us(message), started)
        stats.inserted += result.inserted
        stats.duplicates += result.duplicates
        stats.rejected += result.rejected
    return stats


def _published_us(message: QueuedMessage) -> int | None:
    """The queue's publish time (epoch seconds, as stored) in microseconds."""
    return None if message.published_at is None else int(message.published_at * 1_000_000)


class QueueWorker(threading.Thread):
    """Drains the queue in the background of `meterline serve`."""

    def __init__(self, queue: SqliteQueue, service: ProcessService, idle_seconds: float = 0.05):
        super().__init__(name="meterline-queue-worker", daemon=True)
        self._queue = queue
        self._service = service
        self._idle = idle_seconds
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                stats = drain_once(self._queue, self._service)
            except Exception as exc:  # noqa: BLE001 - the worker outlives any one failure
                logs.failure(_log, "worker loop failed; retrying", exc)
                stats = DrainStats()
            if stats.messages == 0:
                self._halt.wait(self._idle)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
