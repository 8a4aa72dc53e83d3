"""The web dashboard the coordinator serves (``http_port``): camera tiles with live thumbnails and skeletons,
per-camera statistics with sparklines, nodes, and each scene's 3D people and their reprojection.

aiohttp runs in the coordinator's event loop beside grpc.aio. The page and its script are bundled in the
package (``web/``; edge fleets are often offline: no CDN). Live state goes out as Server-Sent Events, which
browsers reconnect by themselves. With the fleet TLS the dashboard is HTTPS and wants a login: an admin or
subscriber client certificate in the browser, or a token from ``posefleet pki token`` (given once as
``?token=``, then kept in a cookie). A subscriber sees only its cameras and scenes. ``--insecure`` opens it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
from aiohttp import web
from posefleet.common.certs import ANYONE, MAX_TOKEN_DAYS, Peer, peer_of_pem, peer_of_token, revocations_of
from posefleet.common.images import EncodedImageError, decode_encoded
from posefleet.common.keypoints import SKELETON
from posefleet.common.slots import Slots, SlotsFull
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.consumers import ResultConsumer
from posefleet.v1 import pose_pb2

log = logging.getLogger("posefleet.coordinator.dashboard")
WEB = Path(__file__).parent / "web"
#: Thumbnails are this wide (height by the frame's aspect); made on request, at most every THUMB_EVERY_S per
#: camera (a newer request within that time gets the last one made).
THUMB_WIDTH = 320
#: Frames beyond the nodes' default limits get no thumbnail.
THUMB_MAX_SIDE, THUMB_MAX_PIXELS = 4096, 4096 * 4096
THUMB_EVERY_S = 0.5
#: The page's update period, the sparkline sample period and how many samples it keeps (5 minutes).
TICK_S = 0.5
SAMPLE_S = 2.0
HISTORY = 150
#: Live event streams in all, and per login identity (one token or certificate cannot take every slot).
MAX_VIEWERS = 16
MAX_VIEWERS_PER_LOGIN = 4
COOKIE = "posefleet_token"
_VIEWERS = ("admin", "subscriber")
PEER = web.RequestKey("peer", Peer)

Snapshot = Callable[[], dict[str, Any]]


class Frames(ResultConsumer):
    """What each camera's tile shows: the image of its latest answered frame, kept only while someone
    watches, and its thumbnail, made on request (at most every ``THUMB_EVERY_S``)."""

    wants_frames = True

    def __init__(self) -> None:
        self.watchers = 0
        # camera -> sequence -> (declared format, JPEG/PNG bytes)
        self._recent: dict[str, collections.OrderedDict[int, tuple[str, bytes]]] = {}
        self.shown: dict[str, tuple[int, tuple[str, bytes]]] = {}  # camera -> (sequence, image) of its latest result
        self._thumbs: dict[str, tuple[int, bytes, float]] = {}  # camera -> (sequence, JPEG, made at)

    def sent(self, frame: pose_pb2.Frame) -> None:
        """A frame on its way to a node (only JPEG/PNG frames get thumbnails)."""
        kind = {pose_pb2.IMAGE_ENCODING_JPEG: "JPEG", pose_pb2.IMAGE_ENCODING_PNG: "PNG"}.get(frame.image.encoding)
        if not self.watchers or kind is None:
            return
        recent = self._recent.setdefault(frame.camera_id, collections.OrderedDict())
        recent[frame.sequence] = (kind, frame.image.data)
        while len(recent) > 32:  # frames in flight for this camera; older ones were answered or dropped
            recent.popitem(last=False)

    def leave(self) -> None:
        """A viewer left; with nobody watching, the frames kept for thumbnails go (the shown ones stay)."""
        self.watchers -= 1
        if not self.watchers:
            self._recent.clear()

    def answered(self, result: pose_pb2.PoseResult) -> None:
        """The frame of an OK result becomes the camera's shown frame (its poses are the view's latest)."""
        if result.status != pose_pb2.RESULT_STATUS_OK:
            return
        recent = self._recent.get(result.camera_id)
        if recent is not None and (image := recent.pop(result.sequence, None)) is not None:
            self.shown[result.camera_id] = (result.sequence, image)

    def forget(self, camera: str) -> None:
        for table in (self._recent, self.shown, self._thumbs):
            table.pop(camera, None)

    async def thumbnail(self, camera: str) -> bytes | None:
        shown = self.shown.get(camera)
        if shown is None:
            return None
        cached = self._thumbs.get(camera)
        now = time.monotonic()
        if cached is not None and (cached[0] == shown[0] or now - cached[2] < THUMB_EVERY_S):
            return cached[1]
        data = await asyncio.to_thread(_thumbnail, shown[1])
        if data is not None:
            self._thumbs[camera] = (shown[0], data, now)
        return data


#: Every response: scripts and styles from this server only, never framed, no referrer, no MIME sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


def _thumbnail(image: tuple[str, bytes]) -> bytes | None:
    """A small JPEG of a frame, decoded with the same checks as on a node (format, size, bomb, decoder cap)."""
    try:
        pixels = decode_encoded(image[1], image[0], THUMB_MAX_SIDE, THUMB_MAX_PIXELS, THUMB_WIDTH).pixels
    except EncodedImageError as exc:
        log.debug("no thumbnail: %s", exc)
        return None
    h, w = pixels.shape[:2]
    small = cv2.resize(pixels, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return bytes(buf.tobytes()) if ok else None


class Dashboard:
    """The aiohttp application: pages, the JSON state, the event stream, thumbnails; and who may see them."""

    def __init__(
        self, snapshot: Snapshot, frames: Frames, tls: TlsFiles | None, *, max_token_days: float = MAX_TOKEN_DAYS
    ) -> None:
        self.snapshot = snapshot
        self._snapshot: tuple[float, dict[str, Any]] = (-math.inf, {})  # (made at, state): shared by viewers
        self.frames = frames
        self.tls = tls
        self._ca = tls.ca.read_bytes() if tls is not None else b""
        self._revocations = revocations_of(tls.ca) if tls is not None else None
        self.max_token_days = max_token_days
        self.history: dict[str, collections.deque[list[float]]] = {}
        self.viewers = Slots("dashboard viewers", MAX_VIEWERS_PER_LOGIN, MAX_VIEWERS)
        self._runner: web.AppRunner | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.port = 0
        self.app = web.Application(middlewares=[self._login])
        self.app.on_response_prepare.append(_security_headers)
        self._hosts: set[str] = set()
        self._context: ssl.SSLContext | None = None
        self._stamp: tuple[float, ...] = ()
        self.app.add_routes(
            [
                web.get("/", self._index),
                web.get("/api/state", self._state),
                web.get("/api/events", self._events),
                web.get("/api/cameras/{camera}/thumbnail.jpg", self._thumbnail),
                web.static("/static", WEB),
            ]
        )

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            context.verify_mode = ssl.CERT_OPTIONAL  # a browser certificate logs in; a token does too
            self._context, self._stamp = context, self.tls.stamp()
        site = web.TCPSite(self._runner, host, port, ssl_context=context, reuse_port=False)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        names = {host, "localhost", "127.0.0.1", "[::1]"} - {"0.0.0.0", "::", ""}
        self._hosts = {f"{name}:{self.port}" for name in names} | names
        self._sampler = asyncio.create_task(self._sample(), name="dashboard-history")
        log.info("dashboard on %s://%s:%d", "https" if context else "http", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _rotate(self) -> None:
        """Certificate files that changed are served from the next handshake on, as the gRPC servers do (open
        connections keep theirs; a new certificate that does not match its key yet is not taken)."""
        if self.tls is None or self._context is None or self.tls.stamp() in ((), self._stamp):
            return
        try:
            self._context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
            self._context.load_verify_locations(cafile=str(self.tls.ca))
        except (OSError, ssl.SSLError) as exc:  # mid-rotation: keep the current one
            log.warning("dashboard keeps its current certificate for now: %s", exc)
            return
        self._stamp = self.tls.stamp()
        log.info("dashboard serves the rotated certificate %s", self.tls.cert)

    async def _sample(self) -> None:
        """Every ``SAMPLE_S``: each camera's processed FPS and latency for the sparklines (bounded), and a look
        at the certificate files."""
        while True:
            await asyncio.sleep(SAMPLE_S)
            self._rotate()
            state = self._current()
            known = set()
            for cam in state["cameras"]:
                known.add(cam["id"])
                row = [round(time.time(), 1), cam["processed_fps"], cam["latency_p50_ms"], cam["latency_p99_ms"]]
                self.history.setdefault(cam["id"], collections.deque(maxlen=HISTORY)).append(row)
            for gone in set(self.history) - known:
                del self.history[gone]

    # -- who is looking -------------------------------------------------------------------------
    def _peer(self, request: web.Request) -> tuple[Peer | None, str]:
        if self.tls is None:
            return ANYONE, ""
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            peer = peer_of_pem(ssl.DER_cert_to_PEM_cert(der).encode())
            if peer is not None and self._revocations is not None and self._revocations.revoked(peer.serial):
                return None, f"{peer}: its certificate is revoked"
            if peer is not None:
                return peer, ""
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return self._token(request.headers["Authorization"].removeprefix("Bearer "))
        # A valid session (the cookie) wins over a token in the address: a link cannot log a viewer in as
        # someone else (login CSRF); the address's token is used only where there is no valid session.
        session = self._token(request.cookies.get(COOKIE, ""))
        if session[0] is not None or "token" not in request.query:
            return session
        return self._token(request.query["token"])

    def _token(self, token: str) -> tuple[Peer | None, str]:
        if not token:
            return None, "log in with an admin or subscriber certificate, or a token from `posefleet pki token`"
        return peer_of_token(token, self._ca, self._revocations, self.max_token_days)

    @web.middleware
    async def _login(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.tls is None and request.host.lower() not in self._hosts:
            # --insecure: nothing proves who asks, so at least the page answers only to its own names (a DNS
            # rebinding page under another name cannot read it from a browser on this machine).
            raise web.HTTPMisdirectedRequest(text=f"posefleet dashboard: not served as {request.host!r}\n")
        peer, why = self._peer(request)
        if peer is None:
            raise web.HTTPUnauthorized(text=f"posefleet dashboard: {why}\n")
        if peer.role not in _VIEWERS:
            why = f"{peer} may not look; it needs the role admin or subscriber"
            raise web.HTTPForbidden(text=f"posefleet dashboard: {why}\n")
        if "token" in request.query:  # keep it in a cookie, out of the address bar and the history
            rest = {k: v for k, v in request.query.items() if k != "token"}
            response = web.HTTPFound(request.rel_url.with_query(rest))
            if self._token(request.cookies.get(COOKIE, ""))[0] is None:  # never over a valid session
                response.set_cookie(
                    COOKIE, request.query["token"], httponly=True, secure=True, samesite="Strict", max_age=86400
                )
            raise response
        request[PEER] = peer
        return await handler(request)

    def _current(self) -> dict[str, Any]:
        """The fleet's state, made at most once per half tick whatever the number of viewers (read-only)."""
        made, state = self._snapshot
        now = time.monotonic()
        if now - made >= TICK_S / 2:
            state = self.snapshot()
            self._snapshot = (now, state)
        return state

    def _visible(self, request: web.Request) -> dict[str, Any]:
        """The state, as much of it as the viewer may see (new lists and dicts: the shared one stays as is)."""
        state = self._current()
        peer = request[PEER]
        cameras, scenes = state["cameras"], state["scenes"]
        if peer.role != "admin":
            cameras = [c for c in cameras if c["id"] in peer.cameras]
            scenes = [s for s in scenes if set(s["cameras"]) <= peer.cameras]
        cameras = [{**c, "history": list(self.history.get(c["id"], ()))} for c in cameras]
        return {**state, "cameras": cameras, "scenes": scenes}

    # -- handlers ------------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB / "index.html")

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({**self._visible(request), "skeleton": SKELETON})

    def _still_allowed(self, request: web.Request) -> bool:
        """Whether the viewer's login still holds: not expired, not revoked (its certificate, token or signer)."""
        if self.tls is None:
            return True
        peer, _ = self._peer(request)
        return peer is not None and peer.expires > time.time()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        peer = request[PEER]
        holder = f"{peer} ({request.remote})" if peer is ANYONE else str(peer)
        try:
            self.viewers.take(holder)
        except SlotsFull as exc:
            raise web.HTTPServiceUnavailable(text=f"posefleet dashboard: {exc}\n") from None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        self.frames.watchers += 1
        try:
            await response.prepare(request)
            await response.write(f"retry: 1000\nevent: skeleton\ndata: {json.dumps(SKELETON)}\n\n".encode())
            # The login is checked again every tick: a stream ends when its token or certificate expires or is
            # revoked (the page then asks for a login again), not when the viewer leaves.
            while self._still_allowed(request):
                await response.write(f"data: {json.dumps(self._visible(request))}\n\n".encode())
                await asyncio.sleep(TICK_S)
            await response.write(b"event: logout\ndata: {}\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.frames.leave()
            self.viewers.give(holder)
        return response

    async def _thumbnail(self, request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        peer = request[PEER]
        if peer.role != "admin" and camera not in peer.cameras:
            raise web.HTTPForbidden(text=f"{peer} may not see camera {camera}\n")
        data = await self.frames.thumbnail(camera)
        if data is None:
            raise web.HTTPNotFound(text=f"no frame of camera {camera} yet\n")
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})
