"""The coordinator's web dashboard: who may see it (client certificates, tokens), and the page itself in a
real headless Chromium against a real cluster streaming the sample clip."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from browser import chromium, dashboard_cluster, track_rgb
from posefleet.bench.loopback import LoopbackLink
from posefleet.clients.sdk import PosefleetClient
from posefleet.common.certs import issue_token, throwaway_fleet
from posefleet.common.tls import TlsFiles
from posefleet.coordinator.server import CoordinatorServer
from posefleet.coordinator.settings import CoordinatorSettings
from posefleet.v1 import pose_pb2
from selenium.webdriver.common.by import By


def _context(client: TlsFiles | None, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False  # the certificate names coordinator.posefleet, not 127.0.0.1
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


async def _get(url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=context, allow_redirects=False, headers=headers) as reply,
    ):
        return reply.status, await reply.text()


async def tls_coordinator(files: TlsFiles) -> CoordinatorServer:
    """An in-process coordinator with fleet TLS and its dashboard on a free port; one loopback node n0."""
    LoopbackLink.nodes = {"n0": {"capacity": 8}}
    settings = CoordinatorSettings(
        host="127.0.0.1", port=0, discover=False, ca=files.ca, cert=files.cert, key=files.key, http_port=0
    )
    server = CoordinatorServer(settings, link_factory=LoopbackLink)
    await server.start()
    server.registry.add("n0", "loopback-n0", "static")
    return server


def signed_token(pki: Path, key_file: str = "token-signer.key", **claims: object) -> str:
    """A token with these claims, signed by ``pki``'s token signer (as an attacker holding it could), or with
    ``key_file="ca.key"`` the way tokens were signed before token signers (with the CA key, two parts)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issue_token(pki, role="admin", name="makes-the-signer")
    key = serialization.load_pem_private_key((pki / key_file).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = json.dumps({"cameras": [], **claims}, separators=(",", ":"), sort_keys=True).encode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    token = f"{b64(payload)}.{b64(key.sign(payload, ec.ECDSA(hashes.SHA256())))}"
    if key_file == "ca.key":
        return token
    signer = x509.load_pem_x509_certificate((pki / "token-signer.crt").read_bytes())
    return f"{token}.{b64(signer.public_bytes(serialization.Encoding.DER))}"


async def test_the_dashboard_wants_an_admin_or_subscriber_login(fleet: dict[str, TlsFiles], tmp_path: Path) -> None:
    pki = fleet["coordinator"].ca.parent
    server = await tls_coordinator(fleet["coordinator"])
    try:
        for camera in ("cam-a", "cam-b"):

            async def one(camera: str = camera) -> AsyncIterator[pose_pb2.Frame]:
                yield pose_pb2.Frame(camera_id=camera, sequence=0)

            async with PosefleetClient(f"127.0.0.1:{server.port}", tls=fleet[camera]) as client:
                assert [r.status async for r in client.stream_camera(one())] == [pose_pb2.RESULT_STATUS_OK]
        base = f"https://127.0.0.1:{server.http_port}"
        anonymous = _context(None, pki / "ca.crt")
        for path in ("/", "/api/state", "/api/events", "/api/cameras/cam-a/thumbnail.jpg"):
            status, text = await _get(base + path, anonymous)
            assert status == 401 and "posefleet pki token" in text, (path, status, text)
        status, text = await _get(base + "/api/state", _context(fleet["cam-a"], pki / "ca.crt"))
        assert status == 403 and "camera 'cam-a' may not look" in text
        throwaway_fleet(tmp_path / "other", [])  # another fleet's CA signs a token
        forged = issue_token(tmp_path / "other", role="admin", name="x")
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {forged}"})
        assert status == 401 and "not one this fleet's CA certified" in text
        for garbage in ("not-a-token", "a.b.c", "%00%ff." * 50, "eyJ9.eyJ9"):  # not even a token: 401, no crash
            status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {garbage}"})
            assert status == 401 and "not one this fleet" in text, (garbage, status, text)
        now = int(time.time())
        expired = signed_token(pki, role="admin", name="old", iat=now - 7200, exp=now - 3600, id="a1")
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {expired}"})
        assert status == 401 and "expired" in text
        until_2300 = signed_token(pki, role="admin", name="old", iat=now, exp=10_413_792_000, id="a2")
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {until_2300}"})
        assert status == 401 and "longer than 90 days" in text, text
        no_id = signed_token(pki, role="admin", name="old", exp=now + 3600)  # made before tokens had ids
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {no_id}"})
        assert status == 401 and "no id or lifetime" in text
        # Review finding 12: the CA key no longer signs tokens; a token it signed (as before) is refused.
        by_ca = signed_token(pki, "ca.key", role="admin", name="old", iat=now, exp=now + 3600, id="a3")
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {by_ca}"})
        assert status == 401 and "not one this fleet signed" in text, text
        # A subscriber's token: once in the address, then a cookie; it sees its camera only.
        token = issue_token(pki, role="subscriber", name="wall", cameras=["cam-a"])
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/?token={token}", ssl=anonymous, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/" and "HttpOnly" in r.headers["Set-Cookie"]
            async with session.get(f"{base}/api/state", ssl=anonymous, cookies={"posefleet_token": token}) as r:
                state = await r.json()
            cookies = {"posefleet_token": token}
            async with session.get(f"{base}/api/cameras/cam-b/thumbnail.jpg", ssl=anonymous, cookies=cookies) as r:
                assert r.status == 403
        assert [c["id"] for c in state["cameras"]] == ["cam-a"] and state["nodes"][0]["healthy"]
        admin = _context(fleet["admin"], pki / "ca.crt")
        status, text = await _get(base + "/api/state", admin)
        assert status == 200 and [c["id"] for c in json.loads(text)["cameras"]] == ["cam-a", "cam-b"]
        status, text = await _get(base + "/api/cameras/%2e%2e%2f%00x/thumbnail.jpg", admin)
        assert status == 404 and "no frame of camera" in text
    finally:
        await server.stop()


def text_of(driver: Any, css: str) -> str:
    """The text of the first element matching ``css`` ("" if none): the page re-renders every half second,
    so an element found may be replaced before it is read; read again then."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            cells = driver.find_elements(By.CSS_SELECTOR, css)
            return str(cells[0].text) if cells else ""
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{css}: replaced on every read")


def test_the_dashboard_in_a_real_browser(models: dict[str, Path], assets: Path, tmp_path: Path) -> None:
    """Chromium (headless, the distribution's) on a cluster streaming the sample clip: the camera tile shows
    the skeleton in its track's colour at the keypoints, the FPS number follows the stream (positive while it
    streams, 0 once it ends), a killed node turns unhealthy on the page within 3 s."""
    driver = chromium()  # first: a browser that cannot start leaves no cluster behind
    cluster = dashboard_cluster(tmp_path, models["posenet075"], ["door"])
    try:
        driver.get(cluster.url + f"?token={cluster.token}")
        assert driver.find_elements(By.ID, "cameras"), "the page loads"
        camera = cluster.camera("door", assets / "video" / "pose_1.mp4", fps=10)
        deadline = time.monotonic() + 30
        fps: list[str] = []
        people: list[str] = []
        while time.monotonic() < deadline and (not any(float(f) > 0 for f in fps) or "1" not in people):
            if cell := text_of(driver, '[data-camera="door"] .fps'):
                fps.append(cell)
            people.append(text_of(driver, '[data-camera="door"] .people'))
            time.sleep(0.5)
        assert any(float(f) > 0 for f in fps), f"the FPS number shows the stream: {fps}"
        # One person in the clip: tracked poses, never the decoder's fragments (0 only before the first answer).
        assert "1" in people and set(people) <= {"", "0", "1"}, people
        assert not driver.find_element(By.ID, "weak").is_selected(), "untracked poses hidden by default"
        row = text_of(driver, '[data-node="dash-node-1"]')
        assert "FP16, runs " in row, row  # the precision the node's device runs the model in
        cluster.nodes["dash-node-1"].proc.kill()
        killed = time.monotonic()
        health = ""
        while time.monotonic() - killed < 5:
            health = text_of(driver, '[data-node="dash-node-1"] .health')
            if health == "unhealthy":
                break
            time.sleep(0.1)
        seen_after = time.monotonic() - killed
        assert health == "unhealthy" and seen_after <= 3.0, (health, seen_after)
        camera.wait(timeout=60)  # the clip ends: the tile keeps its last frame and skeleton, its FPS falls to 0
        time.sleep(1.5)
        ended = time.monotonic()
        while time.monotonic() - ended < 15 and float(text_of(driver, '[data-camera="door"] .fps') or "nan") != 0:
            time.sleep(0.5)
        fps.append(text_of(driver, '[data-camera="door"] .fps'))
        assert float(fps[-1]) == 0, f"the FPS number follows the stream (its rate is over the last 5 s): {fps}"
        shown = driver.execute_script(
            "const t = tiles.get('door'); const r = t.canvas.getBoundingClientRect();"
            "return {poses: t.posesShown, width: t.cam.width, left: r.left, top: r.top, cw: t.canvas.width};"
        )
        png = driver.get_screenshot_as_png()
        (tmp_path / "dashboard.png").write_bytes(png)
    finally:
        driver.quit()
        cluster.stop()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    scale = shown["cw"] / shown["width"]
    checked = matched = 0
    for pose in shown["poses"]:
        if not pose.get("track_id"):
            continue
        want = np.array(track_rgb(pose["track_id"])[::-1], float)  # BGR
        for keypoint in pose["keypoints"]:
            x, y, score = keypoint["x"], keypoint["y"], keypoint["score"]
            if score < 0.2:
                continue
            px, py = round(shown["left"] + x * scale), round(shown["top"] + y * scale)
            patch = image[py - 1 : py + 2, px - 1 : px + 2].reshape(-1, 3).astype(float)
            checked += 1
            matched += bool((np.abs(patch - want).max(axis=1) < 40).any())
    print(f"skeleton pixels: {matched} of {checked} keypoints in their track colour; node out on the page after "
          f"{seen_after:.1f} s; FPS readings {fps}")  # fmt: skip
    assert checked >= 8 and matched >= 0.8 * checked


async def test_revoked_certificates_and_tokens_are_refused_without_a_restart(tmp_path: Path) -> None:
    """``posefleet pki revoke``: a revoked camera certificate can no longer stream (UNAUTHENTICATED, saying so)
    while another camera goes on; a revoked token and a revoked admin certificate no longer open the
    dashboard. The coordinator reads ``ca.crl`` again when it changes; a list the CA did not sign is ignored."""
    import grpc
    from nodes import run_cli

    pki = tmp_path / "pki"
    members = [("coordinator", "coordinator", []), ("admin", "ops", []), ("camera", "cam-a", ["cam-a"]),
               ("camera", "cam-b", ["cam-b"])]  # fmt: skip
    fleet = throwaway_fleet(pki, members)
    server = await tls_coordinator(fleet["coordinator"])

    async def stream(camera: str) -> list[int]:
        async def one() -> AsyncIterator[pose_pb2.Frame]:
            yield pose_pb2.Frame(camera_id=camera, sequence=0)

        async with PosefleetClient(f"127.0.0.1:{server.port}", tls=fleet[camera]) as client:
            return [r.status async for r in client.stream_camera(one())]

    try:
        base = f"https://127.0.0.1:{server.http_port}"
        anonymous = _context(None, pki / "ca.crt")
        admin = _context(fleet["ops"], pki / "ca.crt")
        token = issue_token(pki, role="admin", name="wall")
        bearer = {"Authorization": f"Bearer {token}"}
        assert await stream("cam-a") == await stream("cam-b") == [pose_pb2.RESULT_STATUS_OK]
        assert (await _get(base + "/api/state", anonymous, headers=bearer))[0] == 200
        assert (await _get(base + "/api/state", admin))[0] == 200

        done = run_cli("pki", "revoke", "--dir", pki, "cam-a")
        assert done.returncode == 0 and "revoked" in done.stdout, done.stderr
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream("cam-a")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "camera 'cam-a': its certificate" in (refused.value.details() or "") and "revoked" in (
            refused.value.details() or ""
        )
        assert await stream("cam-b") == [pose_pb2.RESULT_STATUS_OK]

        token_id = run_cli("pki", "token", "--dir", pki, "--role", "admin", "--name", "x").stdout  # prints its id
        assert "token id " in token_id
        for what in (_token_id(token), "ops"):
            assert run_cli("pki", "revoke", "--dir", pki, what).returncode == 0
        status, text = await _get(base + "/api/state", anonymous, headers=bearer)
        assert status == 401 and "revoked" in text
        status, text = await _get(base + "/api/state", admin)
        assert status == 401 and "revoked" in text

        # Review finding 12: tokens are minted where only the token signer lives (no CA key there), and
        # revoking the signer ends every token it signed.
        mint = tmp_path / "mint"
        mint.mkdir()
        for name in ("ca.crt", "token-signer.crt", "token-signer.key"):
            shutil.copy(pki / name, mint / name)
        minted = issue_token(mint, role="admin", name="kiosk")
        assert not (mint / "ca.key").exists()
        assert (await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {minted}"}))[0] == 200
        assert run_cli("pki", "revoke", "--dir", pki, "token-signer").returncode == 0
        status, text = await _get(base + "/api/state", anonymous, headers={"Authorization": f"Bearer {minted}"})
        assert status == 401 and "signer is revoked" in text, text

        (pki / "ca.crl").write_bytes(b"not a CRL")
        assert await stream("cam-b") == [pose_pb2.RESULT_STATUS_OK]  # a broken list: the last good one stays
        with pytest.raises(grpc.aio.AioRpcError):
            await stream("cam-a")
        bad = run_cli("pki", "revoke", "--dir", pki, "nobody-known")
        assert bad.returncode == 2 and "neither a certificate issued" in bad.stderr
        too_long = run_cli("pki", "token", "--dir", pki, "--role", "admin", "--name", "x", "--days", "400")
        assert too_long.returncode == 2 and "1 to 90 days" in too_long.stderr
    finally:
        await server.stop()


def _token_id(token: str) -> str:
    from posefleet.common.certs import token_id

    return token_id(token)


async def test_dashboard_headers_host_guard_and_sessions(fleet: dict[str, TlsFiles]) -> None:
    """Every answer forbids framing, foreign scripts and referrers; an --insecure dashboard answers only to its
    own names (DNS rebinding); a token in the address never replaces a valid session (login CSRF)."""
    pki = fleet["coordinator"].ca.parent
    secure = await tls_coordinator(fleet["coordinator"])
    insecure = CoordinatorServer(
        CoordinatorSettings(host="127.0.0.1", port=0, discover=False, insecure=True, http_port=0),
        link_factory=LoopbackLink,
    )
    await insecure.start()
    try:
        anonymous = _context(None, pki / "ca.crt")
        async with aiohttp.ClientSession() as session:
            for url in (f"https://127.0.0.1:{secure.http_port}/", f"https://127.0.0.1:{secure.http_port}/api/state"):
                async with session.get(url, ssl=anonymous) as reply:  # 401: the headers are there too
                    assert reply.status == 401
                    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
                    assert reply.headers["Referrer-Policy"] == "no-referrer"
                    assert reply.headers["X-Frame-Options"] == "DENY"
            plain = f"http://127.0.0.1:{insecure.http_port}/api/state"
            async with session.get(plain) as reply:
                assert reply.status == 200 and reply.headers["X-Content-Type-Options"] == "nosniff"
            async with session.get(plain, headers={"Host": f"attacker.example:{insecure.http_port}"}) as reply:
                assert reply.status == 421 and "not served as" in await reply.text()
            async with session.get(plain.replace("127.0.0.1", "localhost")) as reply:
                assert reply.status == 200
        # A session cookie for "wall" (subscriber of cam-a); a link carrying an admin's token does not replace it.
        wall = issue_token(pki, role="subscriber", name="wall", cameras=["cam-a"])
        other = issue_token(pki, role="admin", name="intruder")
        base = f"https://127.0.0.1:{secure.http_port}"
        async with aiohttp.ClientSession() as session:
            cookies = {"posefleet_token": wall}
            async with session.get(
                f"{base}/?token={other}", ssl=anonymous, cookies=cookies, allow_redirects=False
            ) as r:
                assert r.status == 302 and "Set-Cookie" not in r.headers
            # Still "wall": cam-b is not its camera (the admin in the address would get 404, no frame yet).
            thumb = f"{base}/api/cameras/cam-b/thumbnail.jpg?token={other}"
            async with session.get(thumb, ssl=anonymous, cookies=cookies) as r:
                assert r.status == 403, await r.text()
        async with aiohttp.ClientSession() as fresh, fresh.get(thumb, ssl=anonymous, allow_redirects=False) as r:
            assert r.status == 302 and f"posefleet_token={other}" in r.headers["Set-Cookie"]  # no session: it logs in
    finally:
        await secure.stop()
        await insecure.stop()


async def test_viewer_slots_are_per_login_and_streams_end_when_the_login_does(tmp_path: Path) -> None:
    """Review finding 8: one token filled all 16 viewer slots (an admin then got 503), and an open event stream
    outlived its token. Now one login holds at most 4 live streams while another still gets in, and a stream
    ends (event ``logout``) within a tick of its token being revoked."""
    from nodes import run_cli

    pki = tmp_path / "pki"
    fleet = throwaway_fleet(pki, [("coordinator", "coordinator", []), ("admin", "ops", [])])
    server = await tls_coordinator(fleet["coordinator"])
    try:
        base = f"https://127.0.0.1:{server.http_port}"
        anonymous = _context(None, pki / "ca.crt")
        token = issue_token(pki, role="subscriber", name="wall")
        bearer = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(f"{base}/api/events", ssl=anonymous, headers=bearer) for _ in range(4)]
            assert [r.status for r in streams] == [200] * 4
            async with session.get(f"{base}/api/events", ssl=anonymous, headers=bearer) as fifth:
                assert fifth.status == 503 and "holds 4 dashboard viewers already" in await fifth.text()
            admin = _context(fleet["ops"], pki / "ca.crt")
            async with session.get(f"{base}/api/events", ssl=admin) as other:
                assert other.status == 200  # another login still gets in
            assert run_cli("pki", "revoke", "--dir", pki, _token_id(token)).returncode == 0
            seen = b""
            async with asyncio.timeout(10):
                while b"event: logout" not in seen:
                    chunk = await streams[0].content.readany()
                    assert chunk, "the stream ended without saying why"
                    seen += chunk
            for stream in streams:
                stream.close()
    finally:
        await server.stop()
