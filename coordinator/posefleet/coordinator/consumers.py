"""The one place an answered frame fans out: every consumer of the coordinator's results, in turn.

A consumer sees each answered frame (``answered``, on the event loop, before the camera gets its reply: the
merge gives its poses their track ids first), each frame sent on to a node if it asks to (``sent``: the
dashboard's thumbnails), and each camera the coordinator forgets (``forget``: its tables shrink with it).
Consumers are the merge (tracks, live scenes), metrics, subscriptions (``Hub``), the fleet view, MQTT and the
dashboard; each does bounded work and never waits.
"""

from __future__ import annotations

from collections.abc import Iterable

from posefleet.v1 import pose_pb2

_STATUS_NAMES: dict[int, str] = {pose_pb2.RESULT_STATUS_OK: "ok", pose_pb2.RESULT_STATUS_DROPPED: "dropped"}


def status_name(status: int) -> str:
    """A result status as metrics and MQTT name it: ok, dropped or failed."""
    return _STATUS_NAMES.get(status, "failed")


class ResultConsumer:
    """What a consumer may override (each does nothing by default)."""

    #: Whether it wants every frame sent (``sent``); nobody wanting them costs cameras nothing.
    wants_frames = False

    def sent(self, frame: pose_pb2.Frame) -> None:
        """A camera's frame on its way to a node."""

    def answered(self, result: pose_pb2.PoseResult) -> None:
        """An answered frame (any status), before it goes back to its camera."""

    def forget(self, camera: str) -> None:
        """The coordinator forgot ``camera`` (idle too long): drop what is kept for it."""


class FanOut:
    """The consumers, in the order they see each result (the merge first: the others see tracked poses)."""

    def __init__(self, consumers: Iterable[ResultConsumer] = ()) -> None:
        self.consumers = list(consumers)

    def add(self, consumer: ResultConsumer) -> None:
        self.consumers.append(consumer)

    @property
    def watching(self) -> bool:
        return any(c.wants_frames for c in self.consumers)

    def sent(self, frame: pose_pb2.Frame) -> None:
        for consumer in self.consumers:
            if consumer.wants_frames:
                consumer.sent(frame)

    def answered(self, result: pose_pb2.PoseResult) -> None:
        for consumer in self.consumers:
            consumer.answered(result)

    def forget(self, camera: str) -> None:
        for consumer in self.consumers:
            consumer.forget(camera)
