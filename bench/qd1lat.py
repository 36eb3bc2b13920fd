#!/usr/bin/env python3
"""bench/qd1lat.py: latency percentiles of 4 KiB reads at queue depth 1.

usage: qd1lat.py HOST PORT TARGET_IQN LUN COUNT [--warmup N]
prints "p50_us p99_us mean_us count" (round trip of one READ(10) of 8 blocks,
send to status, on one iSCSI session over TCP).

Neither qemu-img bench nor iscsi-perf reports percentiles, so this is a
minimal initiator: a login straight into the operational stage (no
authentication), then READ(10)s one at a time over sequential LBAs (wrapping at
1 GiB), timed with perf_counter_ns. Python adds the same fixed cost to every
target measured, so compare targets, not absolute values.
"""
import socket
import statistics
import struct
import sys
import time

BHS = 48


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError("connection closed")
        b += chunk
    return b


def recv_pdu(s):
    h = recv_exact(s, BHS)
    ahs = h[4] * 4
    dlen = int.from_bytes(h[5:8], "big")
    rest = ahs + dlen + (-dlen % 4)
    return h, (recv_exact(s, rest)[ahs:ahs + dlen] if rest else b"")


def login(s, iqn):
    keys = {
        "InitiatorName": "iqn.2026-12.org.rtarget:qd1lat",
        "SessionType": "Normal",
        "TargetName": iqn,
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "262144",
        "InitialR2T": "No",
        "ImmediateData": "Yes",
        "FirstBurstLength": "262144",
        "MaxBurstLength": "262144",
        "MaxOutstandingR2T": "1",
        "ErrorRecoveryLevel": "0",
    }
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in keys.items())
    h = bytearray(BHS)
    h[0] = 0x43  # Login Request, immediate
    h[1] = 0x80 | (1 << 2) | 3  # Transit, CSG=operational, NSG=full feature
    h[5:8] = len(data).to_bytes(3, "big")
    h[8:14] = bytes([0x80, 0x12, 0x34, 0x56, 0, 0])  # ISID (random format)
    for _ in range(8):
        s.sendall(bytes(h) + data + b"\0" * (-len(data) % 4))
        r, _ = recv_pdu(s)
        if r[0] & 0x3F != 0x23 or r[36] != 0:
            raise RuntimeError(f"login failed: class {r[36]} detail {r[37]}")
        if r[1] & 0x80 and r[1] & 3 == 3:
            break
        # The target wants another round (it declared keys of its own):
        # nothing more to say, ask again for the transition.
        h[6:8] = r[6:8]
        h[5:8], h[14:16], data = b"\0\0\0", r[14:16], b""
        h[28:32] = (int.from_bytes(r[24:28], "big") + 1).to_bytes(4, "big")
    else:
        raise RuntimeError("login did not reach full feature phase")
    return int.from_bytes(r[24:28], "big"), int.from_bytes(r[28:32], "big")  # StatSN, ExpCmdSN


def main():
    host, port, iqn, lun, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    warm = int(sys.argv[7]) if len(sys.argv) > 7 and sys.argv[6] == "--warmup" else 1000
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    statsn, cmdsn = login(s, iqn)
    lat = []
    lunb = struct.pack(">HHI", lun & 0x3FFF, 0, 0)
    for i in range(warm + count):
        lba = (i * 8) % (2 * 1024 * 1024)
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, 8, 0) + b"\0" * 6
        h = struct.pack(">BBH", 0x01, 0xC1, 0) + b"\0" * 4 + lunb + struct.pack(
            ">IIII", i + 1, 4096, cmdsn, statsn + 1) + cdb
        t0 = time.perf_counter_ns()
        s.sendall(h)
        while True:
            r, _ = recv_pdu(s)
            op = r[0] & 0x3F
            if op == 0x25 and r[1] & 0x01:  # Data-In with status
                break
            if op == 0x21:  # SCSI Response
                break
            if op == 0x20:  # NOP-In: answer a ping (TTT set), else ignore
                if r[20:24] != b"\xff\xff\xff\xff":
                    s.sendall(bytes([0x40, 0x80]) + r[2:16] + b"\xff" * 4 + r[20:24]
                              + struct.pack(">II", cmdsn, statsn + 1) + b"\0" * 16)
                continue
            if op != 0x25:
                raise RuntimeError(f"unexpected opcode {op:#x}")
        t1 = time.perf_counter_ns()
        status = r[3]
        if status != 0 and i >= warm:  # the first one reports a unit attention
            raise RuntimeError(f"status {status:#x}")
        statsn = int.from_bytes(r[24:28], "big")
        cmdsn += 1
        if i >= warm:
            lat.append((t1 - t0) / 1000)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{p(0.5):.1f} {p(0.99):.1f} {statistics.mean(lat):.1f} {len(lat)}")


if __name__ == "__main__":
    main()
