#!/usr/bin/env python3
"""Malformed-PDU robustness probes for an iSCSI target (python3 stdlib only).

usage: malformed.py HOST PORT IQN LUN [CASE...]     (no CASE: all; --list lists them)

Each case opens raw TCP connections and sends something a sane initiator never
would (garbage, a bad opcode, a truncated header, an oversized
DataSegmentLength, broken login keys, random CDBs ...).  Each probe must get
the answer stated for it in EXPECT (a closed connection, a Reject PDU with its
reason code, a login response with its status class and detail, a CHECK
CONDITION with sense data), and the target must be healthy afterwards: a fresh
session must log in and complete INQUIRY and TEST UNIT READY.  Prints "PASS
malformed-CASE (what happened)" or "FAIL malformed-CASE (what happened; why)"
per case, then "malformed: N of M cases run, F failed".  Exit status 1 if any
case failed, if the probe itself broke (an exception is a FAIL, never a pass),
or if fewer cases ran than were asked for.
"""
import os
import random
import socket
import struct
import sys
import time

TIMEOUT = 3.0
ISID = bytes([0x80, 0x00, 0x12, 0x34, 0x00, 0x01])  # random-qualifier format
INITIATOR = "iqn.2026-11.org.rtarget:malformed-probe"


class Closed(Exception):
    pass


class Unexpected(Exception):
    """The target answered, but not what the probe must get."""


def sense_kcq(sense):
    """(key, ASC, ASCQ) of fixed (0x70/0x71) or descriptor (0x72/0x73) sense data."""
    if len(sense) >= 14 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F, sense[12], sense[13]
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    return None


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise Closed()
        buf += chunk
    return buf


def recv_pdu(s):
    """One PDU (no digests): returns (bhs, data)."""
    bhs = recv_exact(s, 48)
    ahs = bhs[4] * 4
    dsl = int.from_bytes(bhs[5:8], "big")
    rest = recv_exact(s, ahs + ((dsl + 3) & ~3))
    return bhs, rest[ahs:ahs + dsl]


def keys(d):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in d.items())


def pad(data):
    return data + b"\0" * (-len(data) % 4)


def login_pdu(data, csg=1, nsg=3, transit=True, itt=0, cmdsn=1, dsl=None):
    flags = (0x80 if transit else 0) | (csg << 2) | nsg
    dsl = len(data) if dsl is None else dsl
    bhs = struct.pack(">BBBB B3s 6sH I HH I I 16x",
                      0x43, flags, 0, 0, 0, dsl.to_bytes(3, "big"),
                      ISID, 0, itt, 1, 0, cmdsn, 0)
    return bhs + pad(data)


def scsi_cmd(cdb, lun, itt, cmdsn, expstatsn, edtl=0, read=True, write=False,
             data=b"", dsl=None, opcode=0x01, ahs=b""):
    flags = 0x80 | (0x40 if read else 0) | (0x20 if write else 0) | 1
    dsl = len(data) if dsl is None else dsl
    lun_field = struct.pack(">H6x", lun & 0x3FFF) if lun < 256 else struct.pack(">H6x", 0x4000 | lun)
    bhs = struct.pack(">BBH B3s 8s I I I I 16s", opcode, flags, 0, len(ahs) // 4,
                      dsl.to_bytes(3, "big"), lun_field, itt, edtl, cmdsn, expstatsn,
                      cdb.ljust(16, b"\0"))
    return bhs + ahs + pad(data)


class Session:
    """A minimal iSCSI Normal session: straight to operational negotiation (no auth)."""

    def __init__(self, host, port, iqn):
        self.s = socket.create_connection((host, port), timeout=TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cmdsn, self.expstatsn, self.itt = 1, 0, 1
        kv = {"InitiatorName": INITIATOR, "TargetName": iqn, "SessionType": "Normal",
              "HeaderDigest": "None", "DataDigest": "None",
              "MaxRecvDataSegmentLength": 262144, "ImmediateData": "Yes",
              "InitialR2T": "Yes", "MaxBurstLength": 262144, "FirstBurstLength": 65536,
              "ErrorRecoveryLevel": 0, "MaxConnections": 1}
        data = keys(kv)
        for _ in range(6):
            self.s.sendall(login_pdu(data, cmdsn=self.cmdsn))
            bhs, _ = recv_pdu(self.s)
            if bhs[0] & 0x3F != 0x23:
                raise RuntimeError(f"login: unexpected opcode {bhs[0]:#x}")
            if bhs[36] != 0:
                raise RuntimeError(f"login rejected: class {bhs[36]} detail {bhs[37]}")
            self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
            if bhs[1] & 0x80 and bhs[1] & 3 == 3:
                return
            data = b""  # target wants another round: nothing more to offer
        raise RuntimeError("login did not reach full feature phase")

    def command(self, cdb, lun, edtl):
        """Send one read-type command; return (status, data) after the final response
        (the sense data of a CHECK CONDITION is left in self.sense)."""
        itt = self.itt
        self.itt += 1
        self.sense = b""
        self.s.sendall(scsi_cmd(cdb, lun, itt, self.cmdsn, self.expstatsn, edtl=edtl,
                                read=edtl > 0))
        self.cmdsn += 1
        data = b""
        while True:
            bhs, seg = recv_pdu(self.s)
            op = bhs[0] & 0x3F
            if op == 0x25:  # Data-In
                data += seg
                if bhs[1] & 0x01:  # S bit: status rides here
                    self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
                    return bhs[3], data
            elif op == 0x21:  # SCSI Response: the data segment is SenseLength + sense
                self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
                n = int.from_bytes(seg[:2], "big") if len(seg) >= 2 else 0
                self.sense = seg[2:2 + n]
                return bhs[3], data
            elif op == 0x20:  # NOP-In (target ping): not expected here, skip
                continue
            elif op == 0x3F:
                raise RuntimeError(f"command rejected, reason {bhs[2]:#x}")
            else:
                raise RuntimeError(f"unexpected opcode {op:#x}")

    def write(self, cdb, lun, data):
        """Send one write-type command with all of `data` as immediate data; return
        its status (NOP-Ins on the way are skipped)."""
        itt = self.itt
        self.itt += 1
        self.s.sendall(scsi_cmd(cdb, lun, itt, self.cmdsn, self.expstatsn, edtl=len(data),
                                read=False, write=True, data=data))
        self.cmdsn += 1
        while True:
            bhs, _ = recv_pdu(self.s)
            op = bhs[0] & 0x3F
            if op == 0x21:  # SCSI Response
                self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
                return bhs[3]
            if op != 0x20:  # NOP-In
                raise RuntimeError(f"{cdb[0]:#04x}: unexpected opcode {op:#x}")

    def close(self):
        self.s.close()


def healthy(host, port, iqn, lun):
    """A new session must log in and answer INQUIRY and TEST UNIT READY."""
    s = Session(host, port, iqn)
    try:
        for _ in range(3):  # the first TUR may report a unit attention
            st, _ = s.command(b"\x00" * 6, lun, 0)
            if st == 0:
                break
        st, data = s.command(bytes([0x12, 0, 0, 0, 36, 0]), lun, 36)
        if st != 0 or len(data) < 36:
            raise RuntimeError(f"INQUIRY status {st:#x}, {len(data)} bytes")
    finally:
        s.close()


def observe(s, wait=TIMEOUT, show_keys=()):
    """What the target does next on this connection (for a login response, also
    the target's first answer to each key in show_keys)."""
    s.settimeout(wait)
    try:
        bhs, data = recv_pdu(s)
        op = bhs[0] & 0x3F
        if op == 0x3F:
            return f"reject reason {bhs[2]:#x}"
        if op == 0x23:
            answers = {}
            for kv in data.split(b"\0"):
                k, _, v = kv.decode(errors="replace").partition("=")
                answers.setdefault(k, v)
            shown = "".join(f" {k}={answers.get(k, '(none)')}" for k in show_keys)
            return f"login response class {bhs[36]} detail {bhs[37]}{shown}"
        if op == 0x21:
            return f"SCSI response status {bhs[3]:#x}"
        return f"opcode {op:#x}"
    except (Closed, ConnectionResetError):
        # FIN or RST is the same answer: which one the peer sees depends only
        # on whether the target closed with bytes of ours still unread.
        return "closed"
    except (socket.timeout, TimeoutError):
        return "no answer (connection left open)"
    except OSError as e:
        return f"reset ({e.strerror or e})"


def raw(host, port):
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_quiet(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass  # the target may close before we finish: that is an allowed answer


# --- cases: each returns a short description of what the target did ----------
def case_garbage(h, p, iqn, lun):
    s = raw(h, p)
    send_quiet(s, random.Random(1).randbytes(4096))
    r = observe(s)
    s.close()
    return r


def case_bad_opcode(h, p, iqn, lun):
    out = []
    for op in (0x1E, 0x3F, 0x2A):  # vendor, a target opcode, reserved
        s = raw(h, p)
        send_quiet(s, bytes([op]) + b"\0" * 47)
        out.append(f"{op:#x}: {observe(s)}")
        s.close()
    return "; ".join(out)


def case_truncated_header(h, p, iqn, lun):
    s = raw(h, p)
    send_quiet(s, login_pdu(keys({"InitiatorName": INITIATOR}))[:20])
    s.shutdown(socket.SHUT_WR)
    r = observe(s)
    s.close()
    return r


def case_oversized_dsl(h, p, iqn, lun):
    # Login with DataSegmentLength = 16 MiB - 1, then only 1 KiB of it.
    s = raw(h, p)
    pdu = login_pdu(b"", dsl=0xFFFFFF)
    send_quiet(s, pdu + b"A=B\0" * 256)
    r = observe(s)
    s.close()
    return r


def case_bad_login_keys(h, p, iqn, lun):
    out = []
    bad = [
        b"InitiatorName",                                   # no '=', no NUL
        b"=value\0",                                        # empty key
        b"\xff\xfe\xfd=\x80\x81\0",                         # not UTF-8
        ("X" * 70000).encode()[:8000] + b"=1\0",            # key far over 63 bytes
        keys({"InitiatorName": INITIATOR, "TargetName": iqn,
              "MaxRecvDataSegmentLength": "-5", "HeaderDigest": "Bogus"}),
        keys({"InitiatorName": INITIATOR, "TargetName": "iqn.no.such:target"}),
        keys({"InitiatorName": INITIATOR, "TargetName": iqn} | {f"K{i}": i for i in range(2000)}),
    ]
    # Bad values of known keys (#4) must be answered Reject, not taken.
    show = {4: ("HeaderDigest", "MaxRecvDataSegmentLength")}
    for i, data in enumerate(bad):
        s = raw(h, p)
        send_quiet(s, login_pdu(data))
        out.append(f"#{i}: {observe(s, show_keys=show.get(i, ()))}")
        s.close()
    return "; ".join(out)


def case_ffp_bad_opcode(h, p, iqn, lun):
    sess = Session(h, p, iqn)
    send_quiet(sess.s, bytes([0x1D, 0x80]) + b"\0" * 46)
    r = observe(sess.s)
    sess.close()
    return r


def case_ffp_oversized_dsl(h, p, iqn, lun):
    # WRITE(10) whose immediate data claims 16 MiB - 1 (over any MaxRecvDataSegmentLength).
    sess = Session(h, p, iqn)
    cdb = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
    send_quiet(sess.s, scsi_cmd(cdb, lun, 1, sess.cmdsn, sess.expstatsn, edtl=4096,
                                read=False, write=True, dsl=0xFFFFFF) + b"\0" * 4096)
    r = observe(sess.s)
    sess.close()
    return r


def case_ffp_bad_ahs(h, p, iqn, lun):
    # TotalAHSLength 255 words, AHS bytes never sent.
    sess = Session(h, p, iqn)
    pdu = bytearray(scsi_cmd(bytes([0x12, 0, 0, 0, 36, 0]), lun, 1, sess.cmdsn,
                             sess.expstatsn, edtl=36))
    pdu[4] = 255
    send_quiet(sess.s, bytes(pdu) + b"\0" * 16)
    sess.s.shutdown(socket.SHUT_WR)
    r = observe(sess.s)
    sess.close()
    return r


def case_random_cdbs(h, p, iqn, lun):
    # 200 random read-type CDBs (never a write-type opcode, so data is not touched):
    # each must get an answer.
    writes = {0x04, 0x0A, 0x2A, 0x2E, 0x3B, 0x41, 0x42, 0x48, 0x53, 0x55, 0x89, 0x8A,
              0x8E, 0x93, 0x9F, 0xAA, 0xAE, 0x93, 0x1B, 0x35, 0x91, 0x83, 0x5F, 0x9E,
              0x4C, 0x3F, 0x3D, 0x7F, 0xA4, 0x8C, 0x80, 0x81, 0x0C, 0x0E, 0x1D, 0x8D}
    # Each must end GOOD or CHECK CONDITION with fixed or descriptor sense data
    # whose key is ILLEGAL REQUEST (a field of the CDB is wrong); the other
    # statuses would be a target that lost track of the command.
    rng = random.Random(7)
    sess = Session(h, p, iqn)
    statuses, keys = {}, {}
    try:
        for _ in range(3):  # the power-on unit attention goes first
            if sess.command(b"\x00" * 6, lun, 0)[0] == 0:
                break
        for i in range(200):
            op = rng.choice([o for o in range(256) if o not in writes])
            cdb = bytes([op]) + rng.randbytes(15)
            st, _ = sess.command(cdb, lun, rng.choice([0, 8, 512, 4096]))
            statuses[st] = statuses.get(st, 0) + 1
            if st == 0x02:
                k = sense_kcq(sess.sense)
                if k is None:
                    raise Unexpected(f"CDB #{i} {cdb.hex()}: CHECK CONDITION without sense data")
                keys[k[0]] = keys.get(k[0], 0) + 1
                if k[0] != 0x05:
                    raise Unexpected(f"CDB #{i} {cdb.hex()}: sense {k[0]:02x}/{k[1]:02x}/{k[2]:02x}, "
                                     "want key 05 ILLEGAL REQUEST")
            elif st != 0x00:
                raise Unexpected(f"CDB #{i} {cdb.hex()}: status {st:#x}")
    finally:
        sess.close()
    return ("statuses " + ", ".join(f"{k:#x}x{v}" for k, v in sorted(statuses.items()))
            + "; sense keys " + ", ".join(f"{k:#x}x{v}" for k, v in sorted(keys.items())))


def case_many_idle_connections(h, p, iqn, lun):
    socks = [raw(h, p) for _ in range(64)]
    healthy(h, p, iqn, lun)  # must still serve while they sit there
    for s in socks:
        s.close()
    return "64 idle connections, target kept serving"


def case_login_then_drop(h, p, iqn, lun):
    # Sessions that vanish mid-command (read issued, connection reset).
    for _ in range(20):
        sess = Session(h, p, iqn)
        send_quiet(sess.s, scsi_cmd(bytes([0x28, 0, 0, 0, 0, 0, 0, 0x01, 0, 0]), lun, 1,
                                    sess.cmdsn, sess.expstatsn, edtl=256 * 512))
        sess.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sess.close()
    return "20 sessions reset mid-READ"


CASES = {name[5:]: fn for name, fn in globals().items() if name.startswith("case_")}

# What each probe must get: the exact answer string a case returns (see observe()),
# or None when the case checks its answers itself (raising Unexpected).
#   closed: the target dropped the connection (a PDU that cannot be parsed, or that
#     is not a Login PDU before login, leaves nothing to answer: RFC 7143 7.9 / 11.12).
#   login response 2/0: initiator error (malformed key=value text); 2/3: target not found.
#   login response 0/0: well-formed keys with bad or unknown values are answered
#     per key (Reject / NotUnderstood) and the login goes on.
#   reject reason 0x5: Command not supported (an opcode no initiator may send).
EXPECT = {
    "garbage": "closed",
    "bad_opcode": "0x1e: closed; 0x3f: closed; 0x2a: closed",
    "truncated_header": "closed",
    "oversized_dsl": "closed",
    "bad_login_keys": ("#0: login response class 2 detail 0; #1: login response class 2 detail 0; "
                       "#2: login response class 2 detail 0; #3: login response class 2 detail 0; "
                       "#4: login response class 0 detail 0 HeaderDigest=Reject MaxRecvDataSegmentLength=Reject; "
                       "#5: login response class 2 detail 3; "
                       # more than 256 distinct keys in one login: refused (iscsi admission rule)
                       "#6: login response class 2 detail 0"),
    "ffp_bad_opcode": "reject reason 0x5",
    "ffp_oversized_dsl": "closed",
    "ffp_bad_ahs": "closed",
    "random_cdbs": None,
    "many_idle_connections": None,
    "login_then_drop": None,
}
assert set(EXPECT) == set(CASES), "every case states its expected answer"


def run_case(name, h, p, iqn, lun):
    """(ok, text): the probe's answer checked against EXPECT, then the health check."""
    try:
        what = CASES[name](h, p, iqn, lun)
    except Unexpected as e:
        return False, f"wrong answer: {e}"
    except Exception as e:  # the probe itself broke: a failure, never a pass
        return False, f"probe error: {type(e).__name__}: {e}"
    want = EXPECT[name]
    if want is not None and what != want:
        return False, f"{what}; expected: {want}"
    try:
        healthy(h, p, iqn, lun)
    except Exception as e:
        return False, f"{what}; afterwards: {type(e).__name__}: {e}"
    return True, what


def main(argv):
    if len(argv) >= 2 and argv[1] == "--list":
        print("\n".join(CASES))
        return 0
    if len(argv) < 5:
        sys.exit(__doc__)
    h, p, iqn, lun = argv[1], int(argv[2]), argv[3], int(argv[4])
    names = argv[5:] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(f"FAIL malformed (unknown case(s) {', '.join(unknown)})")
        return 1
    failed = ran = 0
    for name in names:
        t0 = time.monotonic()
        ok, what = run_case(name, h, p, iqn, lun)
        ran += 1
        if not ok:
            failed += 1
        print(f"{'PASS' if ok else 'FAIL'} malformed-{name} ({what}; {time.monotonic() - t0:.1f}s)")
        sys.stdout.flush()
    print(f"malformed: {ran} of {len(names)} cases run, {failed} failed")
    return 1 if failed or ran != len(names) else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # the script itself broke: say so, and fail
        print(f"FAIL malformed (script error: {type(e).__name__}: {e})")
        sys.exit(2)
