"""The end-to-end flow against a booted WendyOS guest, shared by the QEMU
tier (tests/qemu/run) and the README's main command (scripts/demo):

  pki-core in podman -> wendy auth login-local -> wendy device provision
  -> wendy device version over mTLS -> checks inside the guest.

The guest runs with user-mode networking: it reaches the host (and so the
published pki-core port) as 10.0.2.2, and QEMU forwards host ports
AGENT_FWD_BASE and AGENT_FWD_BASE+1 to the agent's 50051 and 50052.
Standard library only.
"""

import json
import os
import re
import subprocess
import tempfile
import time
import uuid

from wendyqemu import REPO, GuestError

# Host side of the lab. The guest's view of the host is fixed by QEMU's
# user-mode networking.
GUEST_SEES_HOST_AS = "10.0.2.2"
PKICORE_HOST_PORT = 50070
AGENT_FWD_BASE = 50151
PKICORE_IMAGE = "localhost/wendyos/pkicore:latest"
DEV_API_KEY = "dev-secret-change-me"  # wendy_proto::contract::DEV_API_KEY
AGENT_PORT, AGENT_TLS_PORT = 50051, 50052  # wendy_proto::contract (guest side)

# As scripts/lib/common.sh sets them (for callers that did not source it).
CACHE = os.environ.get("WENDY_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "wendyos")
TARGET = os.environ.get("CARGO_TARGET_DIR") or os.path.join(CACHE, "target")
BUILD = os.environ.get("WENDY_BUILD") or os.path.join(REPO, "build")


def log(msg):
    print(f"\033[1m==> {msg}\033[0m", flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


_release_built = False


def host_binary(name):
    """The release binary of this checkout. cargo always decides: the target
    directory is shared by every clone, so an existing file may be stale.
    The build is the fast tier's own (build_host_release in
    scripts/lib/common.sh), so after that tier there is nothing to do."""
    if name not in ("wendy", "pkicore"):
        raise ValueError(f"no host binary {name!r}")
    global _release_built
    if not _release_built:
        subprocess.run(["bash", "-c", ". scripts/lib/common.sh && build_host_release"], cwd=REPO, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
        _release_built = True
    return os.path.join(TARGET, "release", name)


class PkiCore:
    """pki-core in podman, `serve all --dev`, published on loopback."""

    def __init__(self, port=PKICORE_HOST_PORT):
        self.port = port
        self.name = f"wendy-pkicore-{uuid.uuid4().hex[:8]}"
        self.volume = self.name + "-data"
        self.fingerprint = None

    def start(self):
        binary = host_binary("pkicore")
        log("building the pki-core container image")
        subprocess.run([os.path.join(REPO, "pki-core", "build-container"), "--binary", binary,
                        "--allow-dynamic", "--tag", PKICORE_IMAGE], check=True)
        sh(["podman", "volume", "create", self.volume])
        try:
            sh(["podman", "run", "-d", "--name", self.name,
                "-p", f"127.0.0.1:{self.port}:50051", "-v", f"{self.volume}:/data",
                PKICORE_IMAGE, "serve", "all", "--dev"])
        except subprocess.CalledProcessError as e:
            # Nothing left behind (a created container and its volume), and
            # podman's own words (for example: the port is taken).
            self.stop()
            raise GuestError(f"podman run failed (exit {e.returncode}): {e.stderr.strip()}") from None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = subprocess.run(["podman", "logs", self.name], text=True,
                                  capture_output=True).stdout
            m = re.search(r"^CA fingerprint: ([0-9a-f]{64})$", logs, re.M)
            if m:
                self.fingerprint = m.group(1)
                log(f"pki-core is up in podman ({self.name}), CA fingerprint {self.fingerprint}")
                return self
            time.sleep(0.5)
        raise GuestError("pki-core did not print its CA fingerprint:\n" + self.logs())

    def logs(self):
        r = subprocess.run(["podman", "logs", self.name], text=True, capture_output=True)
        return r.stdout + r.stderr

    def stop(self):
        subprocess.run(["podman", "rm", "-f", self.name], capture_output=True)
        subprocess.run(["podman", "volume", "rm", "-f", self.volume], capture_output=True)


class Cli:
    """The real `wendy` binary with its own config directory."""

    def __init__(self):
        self.config = tempfile.mkdtemp(prefix="wendy-cli-")
        self.binary = host_binary("wendy")

    def run(self, *args, check=True):
        env = dict(os.environ, XDG_CONFIG_HOME=self.config)
        r = subprocess.run([self.binary, *args], text=True, capture_output=True, env=env)
        if check and r.returncode != 0:
            raise GuestError(f"wendy {' '.join(args)} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def json(self, *args):
        return json.loads(self.run(*args, "--json").stdout)


def wait_agent_ready(guest, timeout=180.0):
    """READY=1 from a Type=notify unit: systemd reports it active."""
    _, t = guest.wait_until("systemctl is-active wendy-agent", timeout, interval=1.0)
    return t


def wait_guest_address(guest, timeout=120.0):
    """The guest has a global IPv4 address (DHCP done). The agent is READY
    before that: it binds 0.0.0.0 and does not wait for the network, so a
    client can reach it only from here on."""
    out, _ = guest.wait_until("ip -4 -o addr show scope global | grep -q inet", timeout, interval=1.0)
    return out


def guest_listening(guest, port):
    rc, _ = guest.run(f"ss -Htln 'sport = :{port}' | grep -q .")
    return rc == 0


SERVICE_FILE = "/etc/avahi/services/wendyos-mdns.service"


def guest_advertisement(guest):
    """(port, txt records) of _wendyos._udp as avahi-daemon in the guest
    publishes it, asked over D-Bus (ResolveService) with busctl."""
    name = guest.check(f"sed -n 's:.*<name[^>]*>\\(.*\\)</name>.*:\\1:p' {SERVICE_FILE}").strip()
    if not name:
        raise GuestError(f"no service name in {SERVICE_FILE}")
    out, _ = guest.wait_until(
        "busctl --json=short -- call org.freedesktop.Avahi / org.freedesktop.Avahi.Server "
        f"ResolveService iisssiu -1 -1 '{name}' _wendyos._udp local -1 0", 60, interval=2.0)
    data = json.loads(out.strip().splitlines()[-1])["data"]
    port = int(data[8])
    txt = sorted(bytes(t).decode() for t in data[9])
    return port, txt


def check_provisioned_in_guest(guest):
    port, txt = guest_advertisement(guest)
    if port != AGENT_TLS_PORT or "tls=true" not in txt:
        raise GuestError(f"advertisement is port {port} txt {txt}, expected {AGENT_TLS_PORT} with tls=true")
    if guest_listening(guest, AGENT_PORT):
        raise GuestError("plaintext port 50051 is still open after provisioning")
    if not guest_listening(guest, AGENT_TLS_PORT):
        raise GuestError("mTLS port 50052 is not listening")
    mode = guest.check("stat -c %a /etc/wendy-agent/provisioning.json").strip()
    if mode != "600":
        raise GuestError(f"provisioning.json has mode {mode}")
    return f"avahi: _wendyos._udp port {port} {txt}; 50051 closed"


def login_and_provision(cli, pki, device_addr, name="qemu-demo"):
    """login-local, provision, version over mTLS. Returns the version JSON."""
    cloud_for_cli = f"127.0.0.1:{pki.port}"
    cloud_for_device = f"{GUEST_SEES_HOST_AS}:{pki.port}"
    log(f"wendy auth login-local --cloud {cloud_for_cli}")
    cli.run("auth", "login-local", "--cloud", cloud_for_cli, "--api-key", DEV_API_KEY,
            "--ca-fingerprint", pki.fingerprint)
    log(f"wendy device provision --cloud {cloud_for_device} --device {device_addr}")
    out = cli.run("device", "provision", "--cloud", cloud_for_device, "--cli-cloud", cloud_for_cli,
                  "--api-key", DEV_API_KEY, "--name", name, "--device", device_addr)
    print(out.stdout, end="", flush=True)
    log(f"wendy device version --device {device_addr} (mTLS)")
    return cli.json("device", "version", "--device", device_addr)


def reboot_and_check(guest, cli, device_addr):
    """Reboot; the device must come back provisioned, serving mTLS only."""
    t = guest.reboot()
    wait_agent_ready(guest)
    wait_guest_address(guest)
    detail = check_provisioned_in_guest(guest)
    version = cli.json("device", "version", "--device", device_addr)
    if version.get("mode") != "mtls":
        raise GuestError(f"after reboot the CLI did not use mTLS: {version}")
    return f"back in {t:.0f} s; {detail}"


def read_provisioning_json(guest):
    """The device's provisioning.json, read over the serial console, as bytes."""
    out = guest.check("base64 -w0 /etc/wendy-agent/provisioning.json; echo", timeout=60)
    import base64
    return base64.b64decode(out.strip().splitlines()[-1])


def discover_in_netns(cli, netns, timeout_s=8):
    """`wendy discover --json` run inside the lab namespace."""
    env = dict(os.environ, XDG_CONFIG_HOME=cli.config)
    r = subprocess.run(["ip", "netns", "exec", netns, cli.binary, "discover", "--timeout", str(timeout_s),
                        "--json"], text=True, capture_output=True, env=env)
    if r.returncode != 0:
        raise GuestError(f"wendy discover failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout)
