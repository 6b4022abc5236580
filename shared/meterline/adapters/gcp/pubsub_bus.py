"""EventBus on Pub/Sub: one message per ingest request, confirmed before ingest answers."""

from __future__ import annotations

from meterline.ports import PublishFailed


class PubSubEventBus:
    def __init__(self, publisher, project: str, topic: str, timeout_seconds: float = 30.0):
        self._publisher = publisher
        self._topic = publisher.topic_path(project, topic)
        self._timeout = timeout_seconds

    @property
    def topic_path(self) -> str:
        return self._topic

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        try:
            return self._publisher.publish(self._topic, data, **attributes).result(timeout=self._timeout)
        except Exception as exc:  # the client raises many types (timeouts, gRPC errors); all mean "not confirmed"
            raise PublishFailed(f"publish to {self._topic} not confirmed: {type(exc).__name__}") from exc
