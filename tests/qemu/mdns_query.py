#!/usr/bin/python3
"""One-shot mDNS query (RFC 6762 "legacy unicast": sent from an ephemeral
port, so responders answer by unicast to it) for tests on a lab bridge.

    mdns_query.py NAME [TYPE] [--timeout S] [--iface-addr ADDR]

TYPE is A (default), PTR, SRV or TXT. Prints one JSON object per answer
record: {"name", "type", "ttl", "data"}. Exit status 1 if nothing answered.
Run it inside the lab namespace: qemu/lab-net exec NS tests/qemu/mdns_query.py
wendyos.local. Standard library only.
"""

import argparse
import json
import random
import select
import socket
import struct
import sys
import time

TYPES = {"A": 1, "PTR": 12, "TXT": 16, "SRV": 33, "AAAA": 28}
NAMES = {v: k for k, v in TYPES.items()}
GROUP, PORT = "224.0.0.251", 5353


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def decode_name(msg, off):
    labels, jumped, end = [], False, None
    for _ in range(128):  # bounded: no pointer loops
        n = msg[off]
        if n & 0xC0 == 0xC0:
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if not jumped:
                end = off + 2
            jumped, off = True, ptr
            continue
        if n == 0:
            return ".".join(labels), (end if jumped else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode("utf-8", "replace"))
        off += 1 + n
    raise ValueError("name too long or looping")


def parse(msg):
    _id, _flags, qd, an, ns, ar = struct.unpack("!6H", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = decode_name(msg, off)
        off += 4
    records = []
    for _ in range(an + ns + ar):
        name, off = decode_name(msg, off)
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 1 and rdlen == 4:
            data = socket.inet_ntoa(rdata)
        elif rtype == 28 and rdlen == 16:
            data = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype == 12:
            data = decode_name(msg, off)[0]
        elif rtype == 33:
            prio, weight, port = struct.unpack("!HHH", rdata[:6])
            data = {"priority": prio, "weight": weight, "port": port,
                    "target": decode_name(msg, off + 6)[0]}
        elif rtype == 16:
            data, i = [], 0
            while i < len(rdata):
                n = rdata[i]
                data.append(rdata[i + 1:i + 1 + n].decode("utf-8", "replace"))
                i += 1 + n
        else:
            data = rdata.hex()
        records.append({"name": name, "type": NAMES.get(rtype, rtype), "ttl": ttl, "data": data})
        off += rdlen
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("type", nargs="?", default="A", choices=sorted(TYPES))
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--iface-addr", help="send on the interface with this IPv4 address")
    a = ap.parse_args()

    qid = random.randrange(1, 65535)
    query = struct.pack("!6H", qid, 0, 1, 0, 0, 0) + encode_name(a.name) + struct.pack("!HH", TYPES[a.type], 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    if a.iface_addr:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(a.iface_addr))
    s.bind(("0.0.0.0", 0))
    found = []
    deadline = time.monotonic() + a.timeout
    next_send = 0.0
    while time.monotonic() < deadline and not found:
        if time.monotonic() >= next_send:
            s.sendto(query, (GROUP, PORT))
            next_send = time.monotonic() + 1.0
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            continue
        msg, _src = s.recvfrom(9000)
        try:
            found += [rec for rec in parse(msg) if rec["type"] == a.type]
        except (ValueError, IndexError, struct.error):
            continue
    for rec in found:
        print(json.dumps(rec))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
