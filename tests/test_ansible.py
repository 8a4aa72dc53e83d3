"""Ansible: lint, syntax, a real converge over SSH onto network-namespace hosts, NCS2 in check mode.

The converge test builds its own network: a bridge in its own namespace, a control namespace and two
host namespaces (192.0.2.0/24, TEST-NET-1) joined to it by veth pairs, each host with its own sshd and
a generated key, and its own root prefix for what the playbook writes (namespaces share one
filesystem). systemd does not run in a namespace, so the hosts use the roles' small supervisor
(posefleet_service_manager=supervisor): the same command line and config as the systemd unit, which
is rendered and checked with systemd-analyze separately. Nothing touches the machine's interfaces.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"


def run(*args: str | Path, check: bool = True, timeout: float = 1200, **kw: object) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    return proc  # type: ignore[no-any-return]


def ansible_env(**extra: str) -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": path,
        **extra,
    }


def test_ansible_lint_production_profile() -> None:
    proc = run(
        BIN / "ansible-lint", "--profile", "production", "--offline", ".", cwd=ANSIBLE, env=ansible_env(), check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.parametrize("playbook", ["site.yml", "rolling-upgrade.yml"])
def test_syntax_check(playbook: str) -> None:
    run(
        BIN / "ansible-playbook",
        "--syntax-check",
        "-i",
        ANSIBLE / "inventory/example.yml",
        ANSIBLE / playbook,
        env=ansible_env(),
    )


def _render(tmp_path: Path, **variables: object) -> Path:
    out = tmp_path / "rendered"
    out.mkdir()
    inventory = tmp_path / "render.yml"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "out_dir": str(out),
        **variables,
    }
    inventory.write_text(json.dumps({"all": {"hosts": {"render": host}}}))
    run(BIN / "ansible-playbook", "-i", inventory, ROOT / "tests/ansible/render.yml", env=ansible_env())
    return out


def test_systemd_unit_renders_and_verifies(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "host"
    out = _render(tmp_path, posefleet_root=str(root), posefleet_device="cpu")
    unit = (out / "posefleet-node.service").read_text()
    assert f"ExecStart={root}/opt/posefleet/venv/bin/posefleet node --config {root}/etc/posefleet/node.toml" in unit
    for line in (
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateDevices=yes",
        # The compiled decoder's cache is the one writable directory the sandbox allows.
        "CacheDirectory=posefleet-node",
        'Environment="NUMBA_CACHE_DIR=%C/posefleet-node/numba"',
    ):
        assert line in unit
    # systemd-analyze verify needs the ExecStart binary to exist: point it at this checkout's CLI.
    venv_bin = root / "opt/posefleet/venv/bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "posefleet").symlink_to(BIN / "posefleet")
    proc = run("systemd-analyze", "verify", out / "posefleet-node.service", check=False)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "posefleet-node.service" in ln]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr
    settings = (out / "node.toml").read_text()
    assert 'device = "CPU"' in settings and "port = 50051" in settings
    import tomllib

    assert tomllib.loads(settings)["zeroconf_interfaces"] == []


def test_ncs2_templates_under_raspberry_pi_os(tmp_path: Path) -> None:
    """The NCS2 node's unit, settings and udev rules as a Raspberry Pi gets them: the node runs posefleet's own
    Python and OpenVINO, and its settings name the OpenVINO 2022.3 worker's interpreter and environment."""
    import tomllib

    out = _render(tmp_path, posefleet_root="", posefleet_device="ncs2")
    unit = (out / "posefleet-node.service").read_text()
    assert "DeviceAllow=char-usb_device rw" in unit and "PrivateDevices" not in unit
    assert "LD_LIBRARY_PATH" not in unit and "PYTHONPATH" not in unit
    settings = tomllib.loads((out / "node.toml").read_text())
    assert settings["device"] == "MYRIAD"
    assert settings["legacy_python"] == "/opt/posefleet/legacy-venv/bin/python"
    archive = "/opt/intel/openvino_2022.3"
    assert settings["legacy_env"] == {
        "LD_LIBRARY_PATH": f"{archive}/runtime/lib/aarch64:{archive}/runtime/3rdparty/tbb/lib",
        "PYTHONPATH": f"{archive}/python/python3.9",
    }
    rules = (out / "97-myriad-usbboot.rules").read_text()
    assert (
        'ATTRS{idVendor}=="03e7"' in rules
        and 'ATTRS{idProduct}=="2485"' in rules
        and 'ATTRS{idProduct}=="f63b"' in rules
    )


# What `setup` reports on Raspberry Pi OS 64-bit, as the role reads it.
RPI_FACTS = {"openvino_architecture": "aarch64", "openvino_os_family": "Debian", "openvino_distribution": "Debian"}


def test_ncs2_path_in_check_mode_under_raspberry_pi_os_facts(tmp_path: Path) -> None:
    """The NCS2 path of the openvino role in check mode, with Raspberry Pi OS facts.

    This is where a mock stands in for real hardware: no Pi, no stick and no Intel download exist here.
    The archive URL points at a small local archive so that check mode can inspect it offline.
    """
    fake = tmp_path / "ov"
    (fake / "l_openvino_toolkit").mkdir(parents=True)
    (fake / "l_openvino_toolkit/setupvars.sh").write_text("# fake\n")
    archive = Path(shutil.make_archive(str(tmp_path / "openvino"), "gztar", fake))
    root = tmp_path / "pi"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "posefleet_device": "ncs2",
        "posefleet_root": str(root),
        "posefleet_install_system_packages": False,
        "openvino_ncs2_archive_url": archive.as_uri(),
        "posefleet_python": str(BASE_PYTHON),
        **RPI_FACTS,
    }
    inventory = tmp_path / "inv.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"rpi": host}}}))
    env = ansible_env()
    proc = run(BIN / "ansible-playbook", "--check", "--diff", "-i", inventory, ROOT / "tests/ansible/ncs2.yml", env=env)
    out = proc.stdout
    assert "Unpack OpenVINO 2022.3 LTS for Raspberry Pi" in out and "Install the Myriad USB udev rules" in out
    assert 'ATTRS{idVendor}=="03e7"' in out  # the rendered rules, shown by --diff
    assert not (root / "etc").exists(), "check mode wrote nothing"
    # The same host with CPU facts is refused the NCS2 path with a clear message.
    host["openvino_architecture"] = "x86_64"
    inventory.write_text(json.dumps({"all": {"hosts": {"rpi": host}}}))
    refused = run(
        BIN / "ansible-playbook", "--check", "-i", inventory, ROOT / "tests/ansible/ncs2.yml", env=env, check=False
    )
    assert refused.returncode != 0 and "installs Intel's OpenVINO 2022.3 archive for Raspberry Pi OS" in refused.stdout


# -- a real converge over SSH -----------------------------------------------------------------------

NET = "192.0.2"
HOSTS = {"h1": 11, "h2": 12}


class Fleet:
    """Namespaces, veths, a bridge and sshds, all created here and removed afterwards."""

    def __init__(self, tmp: Path) -> None:
        tag = f"pf{os.getpid() % 100000}"
        self.tmp = tmp
        self.bridge = f"{tag}br"
        self.ctl = f"{tag}ctl"
        self.hosts = {name: f"{tag}{name}" for name in HOSTS}
        self.namespaces = [self.bridge, self.ctl, *self.hosts.values()]
        self.sshd_pids: list[Path] = []

    def ansible_env(self) -> dict[str, str]:
        """Ansible's environment with this fleet's own SSH multiplexing sockets: another run's masters (same
        addresses, other namespaces) are never reused."""
        return ansible_env(ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.tmp / "cp"))

    def ns(self, namespace: str, *args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", namespace, *args, **kw)  # type: ignore[arg-type]

    def up(self) -> None:
        for namespace in self.namespaces:
            run("ip", "netns", "add", namespace)
            self.ns(namespace, "ip", "link", "set", "lo", "up")
        self.ns(self.bridge, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self.ns(self.bridge, "ip", "link", "set", "br0", "up")
        for i, (namespace, address) in enumerate([(self.ctl, 1), *((self.hosts[h], n) for h, n in HOSTS.items())]):
            port = f"p{i}"
            self.ns(self.bridge, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self.ns(self.bridge, "ip", "link", "set", port, "master", "br0", "up")
            self.ns(namespace, "ip", "addr", "add", f"{NET}.{address}/24", "dev", "eth0")
            self.ns(namespace, "ip", "link", "set", "eth0", "up")
            self.ns(namespace, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")
        key = self.tmp / "id_ed25519"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        shutil.copy(key.with_suffix(".pub"), self.tmp / "authorized_keys")
        Path("/run/sshd").mkdir(exist_ok=True)
        for host, address in HOSTS.items():
            hostkey = self.tmp / f"hostkey_{host}"
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey)
            pid = self.tmp / f"sshd_{host}.pid"
            config = self.tmp / f"sshd_{host}.conf"
            config.write_text(
                textwrap.dedent(f"""\
                ListenAddress {NET}.{address}
                Port 22
                HostKey {hostkey}
                PidFile {pid}
                AuthorizedKeysFile {self.tmp / "authorized_keys"}
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                UsePAM no
                StrictModes no
                Subsystem sftp internal-sftp
                """)
            )
            self.ns(
                self.hosts[host],
                shutil.which("sshd") or "/usr/sbin/sshd",
                "-f",
                config,
                "-E",
                self.tmp / f"sshd_{host}.log",
            )
            self.sshd_pids.append(pid)

    def down(self) -> None:
        for host in HOSTS:
            for supervise in (self.tmp / "roots" / host / "opt/posefleet/supervise").glob("posefleet-*"):
                if supervise.suffix != ".pid":
                    run("ip", "netns", "exec", self.hosts[host], supervise, "stop", check=False, timeout=60)
        for pid in self.sshd_pids:
            if pid.exists():
                subprocess.run(["kill", pid.read_text().strip()], check=False)
        for namespace in self.hosts.values():  # anything still running in a host namespace
            run("ip", "netns", "pids", namespace, check=False)
            for p in run("ip", "netns", "pids", namespace, check=False).stdout.split():
                subprocess.run(["kill", "-9", p], check=False)
        for namespace in self.namespaces:
            run("ip", "netns", "delete", namespace, check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if os.geteuid() != 0 or not shutil.which("ip") or not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        if os.environ.get("CI"):
            pytest.fail("the Ansible converge test needs root, iproute2 and openssh-server (make system-deps)")
        pytest.skip("needs root, iproute2 and openssh-server (make system-deps installs them)")
    fleet = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        fleet.up()
        yield fleet
    finally:
        fleet.down()


def _wheelhouse(tmp: Path) -> tuple[Path, Path]:
    """posefleet's wheel and every dependency as wheels: the hosts install offline from them."""
    house = tmp / "wheelhouse"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "-w", house, f"{ROOT}[node,coordinator]", timeout=1800)
    (wheel,) = house.glob("posefleet-*.whl")
    return house, wheel


def _ncs2_stand_ins(tmp: Path, wheelhouse: Path) -> dict[str, object]:
    """h2 is provisioned as an NCS2 Raspberry Pi: a stand-in for Intel's 2022.3 archive (the bindings of PyPI's
    openvino 2022.3 wheel where the archive keeps them, empty library folders), a stand-in for the standalone
    CPython build (pyenv's 3.9, laid out as python-build-standalone's), NumPy < 2 for it in the wheelhouse, and
    the CPU standing in for the stick (no stick here: the worker runs 2022.3's CPU plugin)."""
    from pyenvs import legacy_venv, pyenv_python

    bindings = legacy_venv("3.9").parents[1] / "lib/python3.9/site-packages/openvino"
    archive = tmp / "l_openvino_toolkit_stand_in.tgz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        top = "l_openvino_toolkit_debian9_2022.3_arm64"
        for folder in ("runtime/lib/aarch64", "runtime/3rdparty/tbb/lib"):
            info = tarfile.TarInfo(f"{top}/{folder}")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        setupvars = tmp / "setupvars.sh"
        setupvars.write_text("# stand-in\n")
        tar.add(setupvars, f"{top}/setupvars.sh")
        tar.add(bindings, f"{top}/python/python3.9/openvino")
    standalone = tmp / "cpython-3.9-install_only.tar"
    with tarfile.open(standalone, "w") as tar:
        tar.add(pyenv_python("3.9").parents[1], "python")
    run(sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.9",
        "-d", wheelhouse, "numpy<2", timeout=600)  # fmt: skip
    return {
        "posefleet_device": "ncs2",
        "posefleet_node_device": "CPU",
        "openvino_architecture": "aarch64",
        "openvino_os_family": "Debian",
        "openvino_ncs2_archive_url": archive.as_uri(),
        "openvino_ncs2_standalone_python_url": standalone.as_uri(),
        "openvino_ncs2_os_python": str(tmp / "no-os-python3.9"),
        "openvino_reload_udev": False,
    }


def _inventory(fleet: Fleet, assets: Path, wheelhouse: Path, wheel: Path) -> Path:
    hostvars: dict[str, dict[str, object]] = {
        h: {"ansible_host": f"{NET}.{n}", "posefleet_root": str(fleet.tmp / "roots" / h)} for h, n in HOSTS.items()
    }
    hostvars["h2"].update(_ncs2_stand_ins(fleet.tmp, wheelhouse))
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(fleet.tmp / "id_ed25519"),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "ansible_python_interpreter": str(BASE_PYTHON),
        "posefleet_become": False,
        "posefleet_python": str(BASE_PYTHON),
        "posefleet_install_system_packages": False,
        "posefleet_service_manager": "supervisor",
        "posefleet_service_user": "root",
        "posefleet_pip_extra_args": f"--no-index --find-links {wheelhouse}",
        "posefleet_node_wheel": str(wheel),
        "posefleet_control_cli": str(BIN / "posefleet"),
        "posefleet_pki_control_dir": str(fleet.tmp / "pki"),
        "models_source": str(assets / "models/posenet/tfjs_v1/mobilenet_v1_075"),
        "models_control_dir": str(fleet.tmp / "control-models"),
        # The roles' defaults for gRPC and zeroconf (all interfaces): the namespaces keep mDNS on their bridge.
        "posefleet_node_metrics_host": "{{ ansible_host }}",
        "posefleet_coordinator_metrics_host": "{{ ansible_host }}",
        # A broker that is not there (the coordinator retries it in the background): its password's file.
        "posefleet_coordinator_mqtt": "mqtts://posefleet@127.0.0.1:1",
        "posefleet_coordinator_mqtt_password": "s3cret-from-vault",
    }
    inventory = {
        "all": {"vars": common, "children": {"pose_nodes": {"hosts": hostvars}, "coordinators": {"hosts": {"h1": {}}}}}
    }
    path = fleet.tmp / "inventory.yml"
    path.write_text(json.dumps(inventory))
    return path


def _recap(output: str) -> dict[str, dict[str, int]]:
    recap = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        recap[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", fields)}
    return recap


CHECK = r"""
import asyncio, json, sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf
from posefleet.clients.sdk import PosefleetClient
from posefleet.common.tls import TlsFiles, aio_channel, role_name

admin = TlsFiles.from_pki(__import__("pathlib").Path(sys.argv[5]), "ansible-admin")

async def main():
    health = {}
    for address in sys.argv[1:3]:
        async with aio_channel(address, admin, role_name("node")) as ch:
            for _ in range(100):
                try:
                    request = health_pb2.HealthCheckRequest(service="posefleet.v1.PoseNode")
                    r = await health_pb2_grpc.HealthStub(ch).Check(request, timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.3)
            health[address] = r.status
    zc = AsyncZeroconf(interfaces=[sys.argv[4]], ip_version=IPVersion.V4Only)
    seen = set()
    def on_change(zeroconf, service_type, name, state_change):
        seen.add(name)
    browser = AsyncServiceBrowser(zc.zeroconf, "_posefleet._tcp.local.", handlers=[on_change])
    await asyncio.sleep(4)
    await browser.async_cancel(); await zc.async_close()
    async with PosefleetClient(sys.argv[3], tls=admin) as client:
        nodes = await client.wait_for_nodes(2, timeout=60)
    # Metrics exposed on the host's address: HTTPS that wants a fleet client certificate.
    import ssl, urllib.request
    metrics_url = "https://" + sys.argv[1].split(":")[0] + ":9151/metrics"
    context = ssl.create_default_context(cafile=str(admin.ca))
    context.check_hostname = False  # the node's certificate names it, not its IP
    anonymous = "refused"
    try:
        urllib.request.urlopen(metrics_url, context=context, timeout=10).read()
        anonymous = "served"
    except Exception:
        pass
    context.load_cert_chain(str(admin.cert), str(admin.key))
    metrics = urllib.request.urlopen(metrics_url, context=context, timeout=10).read().decode()
    print(json.dumps({"health": health, "zeroconf": sorted(seen),
                      "coordinator": sorted(n.info.node_id for n in nodes if n.healthy),
                      "precision": {n.info.node_id: n.info.precision for n in nodes},
                      "metrics": "# TYPE posefleet_node_" in metrics, "anonymous_metrics": anonymous}))

asyncio.run(main())
"""


def test_site_converges_over_ssh_and_is_idempotent(fleet: Fleet, assets: Path) -> None:
    house, wheel = _wheelhouse(fleet.tmp)
    inventory = _inventory(fleet, assets, house, wheel)
    playbook: list[str | Path] = [BIN / "ansible-playbook", "-i", inventory, ANSIBLE / "site.yml"]
    first = fleet.ns(fleet.ctl, *playbook, env=fleet.ansible_env(), timeout=1800)
    recap = _recap(first.stdout)
    assert set(recap) == {"h1", "h2", "localhost"} - {"localhost"} | set(recap) & {"localhost"}
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in recap.values()), first.stdout[-3000:]
    # Two installs, not one: each host has its own venv, config and model.
    for host in HOSTS:
        root = fleet.tmp / "roots" / host
        assert (root / "opt/posefleet/venv/bin/posefleet").exists()
        assert (root / "var/lib/posefleet/models/posenet-075-257/model.xml").exists()
        assert f'name = "{host}"' in (root / "etc/posefleet/node.toml").read_text()
    settings = fleet.tmp / "roots/h1/etc/posefleet/coordinator.toml"
    assert settings.stat().st_mode & 0o777 == 0o600 and "s3cret" not in settings.read_text()  # review finding 7
    password = fleet.tmp / "roots/h1/etc/posefleet/mqtt-password"
    assert password.stat().st_mode & 0o777 == 0o600 and password.read_text().strip() == "s3cret-from-vault"
    assert not (fleet.tmp / "roots/h2/etc/posefleet/coordinator.toml").exists()
    # Mutual TLS: the CA key stays on the control host; each host holds its own key only, 0600.
    assert (fleet.tmp / "pki/ca.key").exists() and not list((fleet.tmp / "roots").rglob("ca.key"))
    assert sorted(p.name for p in (fleet.tmp / "roots/h1/etc/posefleet/pki").iterdir()) == [
        "ca.crt", "coordinator.crt", "coordinator.key", "node.crt", "node.key"
    ]  # fmt: skip
    assert sorted(p.name for p in (fleet.tmp / "roots/h2/etc/posefleet/pki").iterdir()) == [
        "ca.crt",
        "node.crt",
        "node.key",
    ]
    assert (fleet.tmp / "roots/h2/etc/posefleet/pki/node.key").stat().st_mode & 0o777 == 0o600

    check = fleet.ns(
        fleet.ctl,
        sys.executable,
        "-c",
        CHECK,
        f"{NET}.11:50051",
        f"{NET}.12:50051",
        f"{NET}.11:50050",
        f"{NET}.1",
        fleet.tmp / "pki",
        timeout=300,
    )
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert set(seen["health"].values()) == {1}, seen  # SERVING
    assert {"h1._posefleet._tcp.local.", "h2._posefleet._tcp.local."} <= set(seen["zeroconf"]), seen
    assert seen["coordinator"] == ["h1", "h2"], seen
    # h2, provisioned as an NCS2 host: its node runs inference in the OpenVINO 2022.3 worker under the
    # standalone Python the role unpacked, with the archive's bindings.
    assert "OpenVINO 2022.3" in seen["precision"]["h2"] and "2022.3" not in seen["precision"]["h1"], seen
    h2 = fleet.tmp / "roots/h2"
    assert (h2 / "opt/posefleet/python3.9/bin/python3.9").exists()
    assert (h2 / "opt/posefleet/legacy-venv/bin/python").exists()
    assert seen["metrics"] and seen["anonymous_metrics"] == "refused", seen

    second = fleet.ns(fleet.ctl, *playbook, env=fleet.ansible_env(), timeout=1800)
    again = _recap(second.stdout)
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in again.values()), second.stdout[-4000:]


STREAM = r"""
import asyncio, collections, json, sys
import cv2
from posefleet.clients.sdk import PosefleetClient, encode_frame
from posefleet.common.tls import TlsFiles
from posefleet.node.tools.media import frames

clip = [cv2.resize(f, (257, 257)) for f in frames(__import__("pathlib").Path(sys.argv[2]))]
count = int(sys.argv[3])

async def main():
    admin = TlsFiles.from_pki(__import__("pathlib").Path(sys.argv[4]), "ansible-admin")
    async with PosefleetClient(sys.argv[1], tls=admin) as client:
        async def gen():
            for i in range(count):
                yield encode_frame(clip[i % len(clip)], camera_id="upgrade", sequence=i)
                await asyncio.sleep(0.1)
        results = [r async for r in client.stream_camera(gen())]
        nodes = {n.info.node_id: n.frames_done for n in await client.list_nodes()}
    statuses = collections.Counter(r.status for r in results)
    print(json.dumps({"sequences": [r.sequence for r in results], "statuses": statuses,
                      "errors": sorted({r.error for r in results if r.error})[:5], "nodes": nodes}))

asyncio.run(main())
"""


def test_certificate_rotation_with_the_rolling_upgrade_loses_no_frames(fleet: Fleet, assets: Path) -> None:
    """Runs after the converge test on the same fleet: a camera streams while rotate-certs.yml gives every node
    a new certificate with the rolling upgrade (drained, restarted, waited for) and the coordinator one it
    serves without a restart."""
    inventory = fleet.tmp / "inventory.yml"
    if not inventory.exists():
        pytest.skip("the converge test did not run")
    certs = {f"{h}/node.crt": (fleet.tmp / f"roots/{h}/etc/posefleet/pki/node.crt").read_bytes() for h in HOSTS}
    certs["h1/coordinator.crt"] = (fleet.tmp / "roots/h1/etc/posefleet/pki/coordinator.crt").read_bytes()
    count = 450  # 45 s at 10 FPS
    stream = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            fleet.ctl,
            sys.executable,
            "-c",
            STREAM,
            f"{NET}.11:50050",
            str(assets / "video/pose_1.mp4"),
            str(count),
            str(fleet.tmp / "pki"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import time

        time.sleep(3)
        upgrade = fleet.ns(
            fleet.ctl,
            BIN / "ansible-playbook",
            "-i",
            inventory,
            ANSIBLE / "rotate-certs.yml",
            env=fleet.ansible_env(),
            timeout=600,
        )
        assert "Drain the node (graceful SIGTERM)" in upgrade.stdout
        # The next node is drained only once the coordinator routes frames to the restarted one again.
        assert re.search(
            r"Wait until each coordinator routes frames to the node.*\n.*ok: \[h1 -> localhost\]", upgrade.stdout
        )
        assert re.search(r"h1\s+:\s+ok=\d+\s+changed=[1-9]", upgrade.stdout), upgrade.stdout[-2000:]
        out, err = stream.communicate(timeout=180)
    finally:
        if stream.poll() is None:
            stream.kill()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["sequences"] == list(range(count)), err[-2000:]
    assert report["statuses"] == {"1": count}, report  # every frame OK: none dropped, none failed
    assert all(done > 0 for done in report["nodes"].values()), report
    for name, before in certs.items():
        host, file = name.split("/")
        assert (fleet.tmp / f"roots/{host}/etc/posefleet/pki/{file}").read_bytes() != before, f"{name}: rotated"
    # The replaced certificates are revoked, and every host holds the list (read on change, no restart).
    from cryptography import x509
    from posefleet.common.certs import read_crl

    old = {x509.load_pem_x509_certificate(pem).serial_number for pem in certs.values()}
    for host in HOSTS:
        pki = fleet.tmp / f"roots/{host}/etc/posefleet/pki"
        assert old <= read_crl(pki / "ca.crl", pki / "ca.crt"), f"{host}: the old certificates are revoked"
