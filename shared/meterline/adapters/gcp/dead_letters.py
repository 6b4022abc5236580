"""DeadLetters on Pub/Sub: list and replay the dead-letter topic, through a pull subscription.

Two kinds of message land on the dead-letter topic: those the events subscription's
dead-letter policy moved after `max_delivery_attempts` (Pub/Sub adds the attributes
`CloudPubSubDeadLetterSource*`, with the delivery count, but no reason: the failure itself
is in the process function's log lines), and those process moved itself past the maximum
age (attribute `reason`).

Listing pulls the messages and hands them straight back (ack deadline 0): a pull
subscription has no read-only "peek", and the dead-letter subscription has no dead-letter
policy of its own, so handing a message back costs nothing.

Replay is at least once: each message is republished to the events topic, and only after
Pub/Sub confirmed that publish is the dead letter acknowledged. A crash between the two (or
an ack that arrives after the ack deadline) leaves the dead letter in place, so it can be
replayed again: a duplicate message, which dedup absorbs like any other redelivery.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from meterline import logs
from meterline.core.clock import to_us
from meterline.core.messages import UndecodableMessage, decode_message
from meterline.ports import DeadLetter, EventBus

_log = logs.get("dead_letters")

SOURCE_PREFIX = "CloudPubSubDeadLetterSource"  # the attributes Pub/Sub adds when it dead-letters
DELIVERY_COUNT = SOURCE_PREFIX + "DeliveryCount"
SOURCE_SUBSCRIPTION = SOURCE_PREFIX + "Subscription"
PULL_BATCH = 1000  # Pub/Sub's maximum per pull
HOLD_SECONDS = 600  # Pub/Sub's longest ack deadline: how long pulled messages are held while we work


class PubSubDeadLetters:
    def __init__(self, subscriber, subscription_path: str, events: EventBus, pull_timeout_seconds: float = 5.0):
        self._subscriber = subscriber
        self._subscription = subscription_path
        self._events = events
        self._pull_timeout = pull_timeout_seconds

    def all(self, limit: int = 1000) -> list[DeadLetter]:
        received = self._pull(limit)
        try:
            letters = [_describe(rm) for rm in received]
        finally:
            self._hand_back(received)
        return sorted(letters, key=lambda d: d.dead_at_us)

    def replay(self, ids: Sequence[str] | None = None) -> list[str]:
        wanted = None if ids is None else set(ids)
        received = self._pull(None, wanted)
        chosen = [rm for rm in received if wanted is None or rm.message.message_id in wanted]
        replayed: list[str] = []
        try:
            for rm in chosen:
                message = rm.message
                attributes = {
                    k: v for k, v in message.attributes.items() if not k.startswith(SOURCE_PREFIX) and k != "reason"
                }
                attributes["replay_of"] = message.message_id
                # Confirmed before the ack: a crash in between replays it once more (dedup absorbs it).
                self._events.publish(message.data, attributes)
                self._subscriber.acknowledge(subscription=self._subscription, ack_ids=[rm.ack_id])
                replayed.append(message.message_id)
        finally:
            done = set(replayed)
            self._hand_back([rm for rm in received if rm.message.message_id not in done])
        logs.event(_log, "dead letters replayed", logging.INFO, replayed=len(replayed))
        return replayed

    def _pull(self, limit: int | None, wanted: set[str] | None = None) -> list:
        """Pull until the subscription answers nothing more, `limit` messages are held, or every
        wanted id was found. Held messages get the longest ack deadline while we work."""
        from google.api_core import exceptions

        held: dict[str, object] = {}  # message id -> its latest ReceivedMessage
        while limit is None or len(held) < limit:
            want = PULL_BATCH if limit is None else min(PULL_BATCH, limit - len(held))
            try:
                response = self._subscriber.pull(
                    subscription=self._subscription, max_messages=want, timeout=self._pull_timeout
                )
            except exceptions.DeadlineExceeded:  # the pull's way of saying "nothing available"
                break
            fresh = [rm for rm in response.received_messages if rm.message.message_id not in held]
            for rm in response.received_messages:
                held[rm.message.message_id] = rm
            if response.received_messages:
                self._subscriber.modify_ack_deadline(
                    subscription=self._subscription,
                    ack_ids=[rm.ack_id for rm in response.received_messages],
                    ack_deadline_seconds=HOLD_SECONDS,
                )
            if not fresh or (wanted is not None and wanted <= held.keys()):
                break
        return list(held.values())

    def _hand_back(self, received: list) -> None:
        if received:
            self._subscriber.modify_ack_deadline(
                subscription=self._subscription, ack_ids=[rm.ack_id for rm in received], ack_deadline_seconds=0
            )


def _describe(rm) -> DeadLetter:
    message = rm.message
    attributes = dict(message.attributes)
    count = attributes.get(DELIVERY_COUNT)
    if "reason" in attributes:
        reason = attributes["reason"]
    elif SOURCE_SUBSCRIPTION in attributes:
        reason = f"delivery attempts exhausted on {attributes[SOURCE_SUBSCRIPTION]} (the process log has each failure)"
    else:
        reason = "unknown"
    try:
        events: int | None = len(decode_message(message.data))
    except UndecodableMessage:
        events = None
    return DeadLetter(
        id=message.message_id,
        reason=reason,
        attempts=int(count) if count and count.isdecimal() else None,
        dead_at_us=to_us(message.publish_time),
        events=events,
    )
