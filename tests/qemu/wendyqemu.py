"""Boot a WendyOS image with qemu/run and drive it over its serial console.

Python standard library only. The guest's serial console is a UNIX socket
(qemu/run --serial-socket); the image logs root in automatically there (a
development image, see docs/decisions/0022-qemu-tests-use-the-serial-console.md),
and Console.run() executes one shell command and returns its exit status and
output, framed by markers the command cannot produce by accident.

Typical use:

    g = Guest("qemuarm64", image_copy, workdir)
    g.start()
    g.wait_login()          # seconds from power-on to the root shell
    rc, out = g.run("systemctl is-active avahi-daemon")
    g.poweroff()
"""

import bisect
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
QEMU_RUN = os.path.join(REPO, "qemu", "run")

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]")


class GuestError(Exception):
    """A guest did not do what a test expected; carries the console tail."""


def clean(data: bytes) -> str:
    """Console bytes to text: no ANSI escapes, no carriage returns."""
    return _ANSI.sub(b"", data).replace(b"\r", b"").decode("utf-8", "replace")


class Console:
    """An expect-like reader/writer on a QEMU serial socket."""

    def __init__(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"serial socket {path} did not appear") from None
                time.sleep(0.05)
        self.buf = bytearray()
        self.arrivals = []  # (offset where a chunk ends, monotonic arrival)
        self.pos = 0  # everything before pos has been consumed by expect()
        self.closed = False
        self.cond = threading.Condition()
        self.seq = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.buf += data
                self.arrivals.append((len(self.buf), time.monotonic()))
                self.cond.notify_all()

    def arrival_of(self, offset):
        """Monotonic time at which byte `offset` arrived."""
        with self.cond:
            i = bisect.bisect_left(self.arrivals, (offset + 1, 0.0))
            return self.arrivals[min(i, len(self.arrivals) - 1)][1]

    def tail(self, n=3000):
        with self.cond:
            return clean(bytes(self.buf[-n:]))

    def expect(self, pattern, timeout):
        """Wait for a regex (bytes) after the last match; return (match, arrival time)."""
        rx = re.compile(pattern, re.S) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf, self.pos)
                if m:
                    self.pos = m.end()
                    break
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    why = "console closed" if self.closed else f"timeout after {timeout:.0f} s"
                    raise GuestError(f"{why} waiting for {rx.pattern!r}; console tail:\n"
                                     + clean(bytes(self.buf[-3000:])))
                self.cond.wait(min(left, 1.0))
        return m, self.arrival_of(m.end() - 1)

    def send(self, text):
        self.sock.sendall(text.encode())

    def run(self, cmd, timeout=60.0):
        """Run one shell command in the guest; return (exit status, output)."""
        self.seq += 1
        n = self.seq
        # The quotes split the markers, so an echo of the command line (if
        # any) never matches; only the shell's output does.
        self.send(f"echo __B{n}''__; {{ {cmd} ; }} 2>&1; echo __E{n}''_$?__\n")
        m, _ = self.expect(re.compile(rb"__B%d__\r?\n(.*?)__E%d_(\d+)__" % (n, n), re.S), timeout)
        return int(m.group(2)), clean(m.group(1)).rstrip("\n")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Guest:
    """One QEMU instance of a WendyOS image, started through qemu/run."""

    LOGIN = re.compile(rb"root@[\w.-]+:[^\r\n]*# ")

    def __init__(self, board, image, workdir, netns=None, tap="tap0", mac=None,
                 fwd_base=None, hostfwds=(), direct_kernel=False, name=None):
        self.board, self.image, self.workdir = board, image, workdir
        self.name = name or board
        self.netns, self.tap, self.mac = netns, tap, mac
        self.fwd_base, self.hostfwds, self.direct_kernel = fwd_base, hostfwds, direct_kernel
        self.sock = os.path.join(workdir, f"{self.name}.serial.sock")
        self.qmp = os.path.join(workdir, f"{self.name}.qmp.sock")
        self.serial_log = os.path.join(workdir, f"{self.name}.serial.log")
        self.qemu_log = os.path.join(workdir, f"{self.name}.qemu.log")
        # Read-only disks after the image (/dev/vdb, ...), for the next start.
        self.extra_disks = []
        self.proc = None
        self.console = None
        self.t_power_on = None
        self.timings = {}

    # -- lifecycle -------------------------------------------------------
    def command(self):
        cmd = [QEMU_RUN, "--board", self.board, "--image", self.image,
               "--serial-socket", self.sock, "--serial-log", self.serial_log,
               "--qmp-socket", self.qmp,
               "--efivars", os.path.join(self.workdir, f"{self.name}.efivars")]
        if self.netns:
            cmd += ["--netns", self.netns, "--tap", self.tap]
        elif self.fwd_base:
            cmd += ["--fwd-base", str(self.fwd_base)]
        else:
            cmd += ["--no-fwd"]
        for f in self.hostfwds:
            cmd += ["--hostfwd", f]
        if self.mac:
            cmd += ["--mac", self.mac]
        if self.direct_kernel:
            cmd += ["--direct-kernel"]
        for f in self.extra_disks:
            cmd += ["--extra-disk", f]
        # A guest reset ends this QEMU and reboot() starts a new one: a power
        # cycle. Under TCG, everything after an in-place reset ran about
        # twice as slow (firmware to kernel 9 s instead of 3 s, the kernel
        # 11 s instead of 5 s), an emulator effect no board has.
        return cmd + ["--reset-exits"]

    def start(self, power_on=None):
        """Power on. qemu/run execs QEMU, so self.proc is QEMU itself.
        power_on: when this boot counts from (default now; a reboot passes
        the reboot command's time)."""
        for p in (self.sock, self.qmp):
            if os.path.exists(p):
                os.unlink(p)
        if power_on is None and os.path.exists(self.serial_log):
            os.unlink(self.serial_log)  # QEMU appends (--reset-exits)
        log = open(self.qemu_log, "ab")
        self.t_power_on = time.monotonic() if power_on is None else power_on
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            self.console = Console(self.sock)
        except GuestError as e:
            self.kill()
            raise GuestError("QEMU did not start:\n" + open(self.qemu_log).read()[-3000:]) from e

    def wait_login(self, timeout=300.0):
        """Wait for the autologin shell; record when the kernel started and
        when the login came, both from power-on."""
        m, t_login = self.console.expect(self.LOGIN, timeout)
        self.timings["power_on_to_login_s"] = t_login - self.t_power_on
        self._shell_init()
        self.timings["power_on_to_kernel_s"] = self.t_kernel - self.t_power_on
        return self.timings["power_on_to_login_s"]

    def _shell_init(self):
        # dash has no line editing, so "stty -echo" really stops the echo;
        # quiet kernel messages and systemd's status lines on the console.
        self.console.send("exec /bin/sh\n")
        time.sleep(0.5)
        # A wide terminal: systemctl and findmnt ellipsize to the tty width.
        self.console.send("stty -echo cols 1000; PS1=''; PS2=''; export TERM=dumb PAGER=cat "
                          "SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 COLUMNS=1000; dmesg -n 1; "
                          "/usr/bin/kill -s RTMIN+21 1; "
                          "echo __SHELL''READY__\n")
        self.console.expect(rb"__SHELLREADY__\r?\n", 60)
        self.t_kernel = self._kernel_start()

    def _kernel_start(self):
        """When this boot's kernel started, on the host's clock: now minus
        the guest's uptime (CLOCK_BOOTTIME, which is CLOCK_MONOTONIC until a
        suspend), taking now as the middle of the round trip. A console line
        cannot mark it: a quiet kernel prints none, and the EFI stub's line
        comes before the stub has decompressed the kernel."""
        t0 = time.monotonic()
        _, out = self.console.run("cat /proc/uptime", 30)
        t1 = time.monotonic()
        return (t0 + t1) / 2 - float(out.split()[0])

    def run(self, cmd, timeout=60.0):
        return self.console.run(cmd, timeout)

    def check(self, cmd, timeout=60.0):
        """Run a command that must succeed; return its output."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise GuestError(f"guest command failed (exit {rc}): {cmd}\n{out}")
        return out

    def wait_until(self, cmd, timeout, interval=1.0):
        """Re-run cmd until it succeeds; return its output and when it did."""
        deadline = time.monotonic() + timeout
        while True:
            rc, out = self.run(cmd, timeout=max(30.0, interval * 5))
            if rc == 0:
                return out, time.monotonic()
            if time.monotonic() > deadline:
                raise GuestError(f"timeout after {timeout:.0f} s: {cmd}\nlast output: {out}")
            time.sleep(interval)

    def reboot(self, timeout=300.0):
        """Reboot from inside the guest; return seconds until the new login.
        The reboot command counts as this boot's power-on, so boot_split()
        afterwards includes the shutdown."""
        self.console.send("systemctl reboot\n")
        t0 = time.monotonic()
        self.wait_reset(timeout)
        self.start(power_on=t0)
        return self.wait_login(timeout)

    def wait_reset(self, timeout=300.0):
        """Wait for the guest to reset (QEMU exits: --reset-exits)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"guest did not reset within {timeout:.0f} s") from None
        finally:
            self.console.close()

    def boot_split(self, unit="wendy-agent.service"):
        """This boot from power-on to `unit` active (READY=1 for the agent),
        in seconds: {firmware, kernel, userspace, agent, ready}. firmware is
        power-on (or the reboot command) to the kernel's clock starting
        (UEFI, GRUB and the EFI stub's decompression; see _kernel_start);
        the rest comes from the guest's CLOCK_MONOTONIC (0 = kernel start): kernel is up to systemd's start (initramfs
        included), userspace up to the agent's exec, agent its exec to READY."""
        out = self.check("systemctl show -p UserspaceTimestampMonotonic --value; "
                         f"systemctl show -p ExecMainStartTimestampMonotonic --value {unit}; "
                         f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}")
        userspace, exec_start, active = (int(v) / 1e6 for v in out.split())
        if not active:
            raise GuestError(f"{unit} is not active")
        firmware = self.t_kernel - self.t_power_on
        return {"firmware": firmware, "kernel": userspace, "userspace": exec_start - userspace,
                "agent": active - exec_start, "ready": firmware + active}

    def qmp_command(self, execute):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.qmp)
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in ("qmp_capabilities", execute):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            f.readline()
        s.close()

    def poweroff(self, timeout=120.0):
        """Clean shutdown from inside the guest; QMP quit if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        t0 = time.monotonic()
        try:
            self.console.send("systemctl poweroff\n")
            self.proc.wait(timeout)
            self.timings["poweroff_s"] = time.monotonic() - t0
        except (subprocess.TimeoutExpired, OSError):
            self.kill()
            raise GuestError(f"guest did not power off within {timeout:.0f} s") from None
        finally:
            self.console.close()

    def kill(self):
        """Stop this QEMU (only the process this object started)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.qmp_command("quit")
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.console:
            self.console.close()

    def guest_monotonic_to_power_on(self, mono_s):
        """Guest CLOCK_MONOTONIC seconds (0 = kernel start) to seconds since power-on."""
        return self.timings["power_on_to_kernel_s"] + mono_s


def board_setting(board, key):
    """A key of board-configs/<board>.conf (shell syntax), as the scripts read it."""
    conf = os.path.join(REPO, "board-configs", f"{board}.conf")
    out = subprocess.run(["bash", "-c", f'. "$1" && printf %s "${{{key}:-}}"', "-", conf],
                         check=True, capture_output=True, text=True).stdout
    return out or None


# -- images ------------------------------------------------------------------

def copy_image(src, dst, grow_mib=0):
    """A sparse copy of an image to boot (the build artefact stays pristine),
    optionally larger so the data partition has room to grow on first boot."""
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    if grow_mib:
        with open(dst, "r+b") as f:
            f.truncate(os.path.getsize(dst) + grow_mib * 1024 * 1024)


def partition_offsets(image):
    """{label: (offset_bytes, size_bytes)} from the image's GPT (sfdisk -J)."""
    out = subprocess.run(["sfdisk", "-J", image], check=True, capture_output=True, text=True).stdout
    table = json.loads(out)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return {p["name"]: (p["start"] * sector, p["size"] * sector) for p in table["partitions"]}


def write_config_partition(image, name, data: bytes):
    """Put a file into the image's FAT `config` partition (mtools, no mount);
    the way a user pre-provisions a device before first boot."""
    off, _ = partition_offsets(image)["config"]
    tmp = os.path.join(os.path.dirname(os.path.abspath(image)), f".{name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        subprocess.run(["mcopy", "-o", "-i", f"{image}@@{off}", tmp, f"::{name}"], check=True, env=env)
    finally:
        os.unlink(tmp)


def have(cmd):
    return shutil.which(cmd) is not None
