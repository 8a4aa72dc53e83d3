"""Results to MQTT (``--mqtt URL``): Home Assistant, Node-RED and everything else that speaks it.

Topics under ``mqtt_prefix`` (``posefleet`` by default):

- ``<prefix>/<camera>/poses``: one JSON message per frame result (sequence, capture time, status, ``people``
  (the tracked poses: a person is a pose the camera's tracker follows; weaker ones are not counted), poses
  with track ids); QoS 0, not retained.
- ``<prefix>/<scene>/persons``: one per fused window of a calibrated scene (3D people); QoS 0.
- ``<prefix>/stats``: cameras, nodes and scenes every ``mqtt_stats_interval_s``; QoS 1, retained.
- ``<prefix>/status``: ``online``, retained; the broker publishes ``offline`` (the last will) if the
  coordinator goes away, and the coordinator does on a clean stop.
- With ``mqtt_discovery``: Home Assistant discovery of a "people in view" sensor per camera
  (``homeassistant/sensor/posefleet_<camera>/people/config``, retained) reading ``<prefix>/<camera>/poses``.

A slow or absent broker never slows cameras: messages wait in a bounded queue (``mqtt_queue``); when it is
full the oldest is dropped and counted (``posefleet_coordinator_mqtt_dropped_total``). The publisher
reconnects with a growing backoff and goes on from the newest messages. ``mqtts://`` uses TLS: the broker
must prove its name with a certificate from ``mqtt_ca``, else the fleet CA when the coordinator has one, else
the system's CAs; a coordinator with fleet TLS presents its own certificate to brokers that ask for one.
``USER:PASSWORD@`` in the URL are the credentials.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from posefleet.common.errors import PosefleetError
from posefleet.common.jsonview import poses_of, scene_to_dict
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.consumers import ResultConsumer, status_name
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.coordinator.subscribers import Backlog, SubscriberTooSlow
from posefleet.v1 import coordinator_pb2, pose_pb2

if TYPE_CHECKING:
    from posefleet.coordinator.live_scene import LiveScene
    from posefleet.coordinator.view import FleetView

log = logging.getLogger("posefleet.coordinator.mqtt")
_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9._:@=-]")  # '+', '#' and '/' mean something in MQTT topics


class MqttError(PosefleetError):
    """An MQTT URL that cannot be used."""


class _PahoReasons(logging.Filter):
    """paho-mqtt's own errors, such as a TLS alert before the broker answers (which aiomqtt reports only as a
    timeout): kept for the publisher's next message instead of logged at every retry."""

    def __init__(self) -> None:
        super().__init__()
        self.latest = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        self.latest = record.getMessage()
        return False


def topic_part(name: str) -> str:
    """A camera or scene id as one topic level (MQTT wildcards and separators replaced)."""
    return _TOPIC_SAFE.sub("_", name)


def parse_url(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise MqttError(f"--mqtt {url!r}: expected mqtts://[USER@]HOST[:PORT] or mqtt://...")
    return {
        "hostname": parts.hostname,
        "port": parts.port or (8883 if parts.scheme == "mqtts" else 1883),
        "username": unquote(parts.username) if parts.username else None,
        "tls": parts.scheme == "mqtts",
    }


class MqttPublisher(ResultConsumer):
    """Takes results from the coordinator (never blocking it) and publishes them while a broker is there."""

    def __init__(self, settings: CoordinatorSettings, tls: TlsFiles | None) -> None:
        assert settings.mqtt is not None
        self.target = parse_url(settings.mqtt)
        self.target["password"] = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        if not self.target["tls"] and settings.mqtt_insecure:
            log.warning(
                "WARNING: mqtt_insecure: poses%s go to %s in clear text; anyone on the path reads them",
                " and the MQTT password" if self.target["password"] else "",
                self.target["hostname"],
            )
        self.prefix = settings.mqtt_prefix
        self.stats_every_s = settings.mqtt_stats_interval_s
        self.discovery = settings.mqtt_discovery
        self.tls = tls
        self.ca = settings.mqtt_ca or (tls.ca if tls is not None else None)
        if settings.mqtt_ca is not None and not self.target["tls"]:
            raise MqttError(f"--mqtt-ca {settings.mqtt_ca}: only an mqtts:// broker uses a CA")
        if settings.mqtt_ca is not None and not settings.mqtt_ca.is_file():
            raise MqttError(f"--mqtt-ca {settings.mqtt_ca}: no such file")
        self.last_error = ""
        self._paho = _PahoReasons()
        self._paho_log = logging.Logger(f"{log.name}.paho")  # not in logging's registry: goes with the publisher
        self._paho_log.parent = log
        self._paho_log.addFilter(self._paho)
        self._queue: collections.deque[tuple[str, bytes, int, bool]] = collections.deque(maxlen=settings.mqtt_queue)
        self._ready = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self.connected = False
        self._announced: set[str] = set()  # cameras with a discovery config; forgotten with the camera
        self._tasks: list[asyncio.Task[None]] = []
        self.on_drop: list[Callable[[], None]] = []  # callbacks counting drops (the Prometheus counter)

    # -- from the coordinator (synchronous, bounded) ------------------------------------------
    def put(self, topic: str, payload: dict[str, Any], qos: int = 0, retain: bool = False) -> None:
        """Queue ``payload`` for ``<prefix>/<topic>``."""
        self._enqueue(f"{self.prefix}/{topic}", payload, qos, retain)

    def _enqueue(self, topic: str, payload: dict[str, Any], qos: int, retain: bool) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1  # the deque drops the oldest
            for count in self.on_drop:
                count()
        self._queue.append((topic, json.dumps(payload).encode(), qos, retain))
        self._ready.set()

    def forget(self, camera: str) -> None:
        """A camera the coordinator forgot: announced again (discovery) if it comes back."""
        self._announced.discard(topic_part(camera))

    def answered(self, result: pose_pb2.PoseResult) -> None:
        camera = topic_part(result.camera_id)
        if self.discovery and camera not in self._announced:
            self._announced.add(camera)
            self._discover(camera)
        message = {
            "camera": result.camera_id,
            "sequence": result.sequence,
            "capture_time_ms": result.capture_time.ToMilliseconds(),
            "status": status_name(result.status),
            "people": sum(1 for pose in result.poses if pose.track_id),  # a person is a tracked pose
            "poses": poses_of(result),
        }
        if result.error:
            message["error"] = result.error
        self.put(f"{camera}/poses", message)

    def _discover(self, camera: str) -> None:
        """Home Assistant MQTT discovery: a 'people in view' sensor for the camera."""
        config = {
            "name": f"{camera} people in view",
            "unique_id": f"posefleet_{camera}_people",
            "state_topic": f"{self.prefix}/{camera}/poses",
            "value_template": "{{ value_json.people }}",
            "availability_topic": f"{self.prefix}/status",
            "unit_of_measurement": "people",
            "icon": "mdi:account-group",
            "device": {"identifiers": [f"posefleet_{camera}"], "name": f"posefleet {camera}"},
        }
        self._enqueue(f"homeassistant/sensor/posefleet_{camera}/people/config", config, 1, True)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, view: FleetView, scenes: dict[str, LiveScene]) -> None:
        """Publish from now on: results as they come, ``view``'s stats every ``stats_every_s``, each scene's
        fused windows."""
        self._tasks = [
            asyncio.create_task(self._publish(), name="mqtt-publish"),
            asyncio.create_task(self._stats(view), name="mqtt-stats"),
            *(
                asyncio.create_task(self._scene(name, scene), name=f"mqtt-scene-{name}")
                for name, scene in scenes.items()
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stats(self, view: FleetView) -> None:
        while True:
            await asyncio.sleep(self.stats_every_s)
            state = view()
            self.put("stats", {k: state[k] for k in ("time", "nodes", "scenes")} | {
                "cameras": [{k: v for k, v in c.items() if k != "poses"} for c in state["cameras"]],
                "mqtt": {"published": self.published, "dropped": self.dropped},
            }, qos=1, retain=True)  # fmt: skip

    async def _scene(self, name: str, scene: LiveScene) -> None:
        """Each fused window of the scene, through the same bounded backlog as any subscriber."""
        while True:
            backlog: Backlog[coordinator_pb2.SceneResult] = Backlog(100, 3600.0)
            try:
                async for window in scene.subscribe(backlog):
                    self.put(f"{topic_part(name)}/persons", scene_to_dict(window))
            except SubscriberTooSlow:
                continue

    def _tls_context(self) -> ssl.SSLContext | None:
        """Read at each connection, so rotated certificates are used without a restart."""
        if not self.target["tls"]:
            return None
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
        if self.tls is not None:  # the coordinator's fleet certificate, for brokers that ask for one
            context.load_cert_chain(self.tls.cert, self.tls.key)
        return context

    def _client(self) -> aiomqtt.Client:
        t = self.target
        will = aiomqtt.Will(f"{self.prefix}/status", b"offline", qos=1, retain=True)
        return aiomqtt.Client(
            t["hostname"],
            t["port"],
            username=t["username"],
            password=t["password"],
            will=will,
            tls_context=self._tls_context(),
            timeout=5.0,
            identifier=None,
            logger=self._paho_log,
        )

    async def _publish(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self._client() as client:
                    self.connected, backoff, self.last_error = True, 0.5, ""
                    log.info("MQTT: connected to %s:%d", self.target["hostname"], self.target["port"])
                    await client.publish(f"{self.prefix}/status", b"online", qos=1, retain=True)
                    while True:
                        while not self._queue:
                            self._ready.clear()
                            await self._ready.wait()
                        item = self._queue.popleft()
                        try:
                            await client.publish(item[0], item[1], qos=item[2], retain=item[3])
                        except aiomqtt.MqttError:
                            self._queue.appendleft(item)  # sent again after the reconnect
                            raise
                        self.published += 1
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: TLS files that cannot be read
                where = f"{self.target['hostname']}:{self.target['port']}"
                reason = f"{exc} ({self._paho.latest})" if self._paho.latest else str(exc)
                self._paho.latest = ""
                if self.connected:
                    log.warning("MQTT: lost %s (%s); messages wait (at most %d)", where, reason, self._queue.maxlen)
                elif reason != self.last_error:  # each new reason once, not at every retry
                    log.warning("MQTT: cannot connect to %s: %s; retrying", where, reason)
                self.connected, self.last_error = False, reason
            except asyncio.CancelledError:
                await self._goodbye()
                raise
            await asyncio.sleep(backoff)
            backoff = min(10.0, backoff * 2)

    async def _goodbye(self) -> None:
        """A clean stop says offline itself (the will is for unclean ones)."""
        if not self.connected:
            return
        try:
            async with self._client() as client:
                await client.publish(f"{self.prefix}/status", b"offline", qos=1, retain=True)
        except aiomqtt.MqttError:
            pass
