#!/usr/bin/env python3
"""Persistent reservations with APTPL across a daemon restart, over raw iSCSI.

usage: aptpl.py register HOST PORT IQN LUN KEY   REGISTER KEY with APTPL=1, then
                                                 RESERVE (Write Exclusive) with it
       aptpl.py check    HOST PORT IQN LUN KEY   READ KEYS lists KEY and READ
                                                 RESERVATION shows KEY holding a
                                                 Write Exclusive reservation; then
                                                 the restored registrant, having sent
                                                 no PR command, is preempted by a
                                                 second initiator and must get
                                                 REGISTRATIONS PREEMPTED (it
                                                 registers KEY again afterwards)
       aptpl.py clear    HOST PORT IQN LUN KEY   unregister KEY (releases it too)
Exit status 0 when the step did what it says; a message says what went wrong.
"""
import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import malformed  # noqa: E402  (same directory)
from malformed import Session, recv_pdu, scsi_cmd  # noqa: E402

OTHER_KEY = 0x4F54484552

WRITE_EXCLUSIVE = 1


def prout(s, lun, action, key, sa_key, aptpl=False, rtype=0):
    """PERSISTENT RESERVE OUT with a 24-byte parameter list sent as immediate data."""
    params = struct.pack(">QQ4xB3x", key, sa_key, 0x01 if aptpl else 0)
    cdb = bytes([0x5F, action, rtype, 0, 0, 0, 0, 0, len(params), 0])
    return s.write(cdb, lun, params)


def prin(s, lun, action):
    cdb = bytes([0x5E, action, 0, 0, 0, 0, 0, 0x10, 0, 0])
    return s.command(cdb, lun, 4096)


def settle(s, lun):
    """Consume unit attentions (power on after a restart) with TEST UNIT READY."""
    for _ in range(8):
        st, _ = s.command(bytes(6), lun, 0)
        if st == 0:
            return
    raise RuntimeError("TEST UNIT READY never became GOOD")


def other_session(host, port, iqn):
    """A session from a second initiator (another InitiatorName)."""
    saved = malformed.INITIATOR
    malformed.INITIATOR = saved + "-other"
    try:
        return Session(host, port, iqn)
    finally:
        malformed.INITIATOR = saved


def sense_of(s, lun):
    """TEST UNIT READY: (status, sense key, ASC, ASCQ) from the response's sense data."""
    itt = s.itt
    s.itt += 1
    s.s.sendall(scsi_cmd(bytes(6), lun, itt, s.cmdsn, s.expstatsn, edtl=0, read=False))
    s.cmdsn += 1
    while True:
        bhs, seg = recv_pdu(s.s)
        op = bhs[0] & 0x3F
        if op == 0x20:  # NOP-In
            continue
        if op != 0x21:
            raise RuntimeError(f"TEST UNIT READY: unexpected opcode {op:#x}")
        s.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
        sense = seg[2:]  # the sense data segment starts with its 2-byte length
        if bhs[3] != 2 or len(sense) < 14:
            return bhs[3], None, None, None
        return bhs[3], sense[2] & 0x0F, sense[12], sense[13]


def preempted_without_pr_commands(host, port, iqn, lun, s, key):
    """The restored registrant `s` only sent TEST UNIT READY since the restart:
    it must still be found by its I_T nexus identity and told when another
    initiator preempts its registration."""
    b = other_session(host, port, iqn)
    settle(b, lun)
    if prout(b, lun, 0x00, 0, OTHER_KEY) != 0:  # REGISTER
        return "second initiator: REGISTER failed"
    if prout(b, lun, 0x04, OTHER_KEY, key, rtype=WRITE_EXCLUSIVE) != 0:  # PREEMPT
        return "second initiator: PREEMPT failed"
    got = sense_of(s, lun)
    if got[1:] != (0x6, 0x2A, 0x05):
        return f"restored registrant got {got}, want UNIT ATTENTION 2A/05 (REGISTRATIONS PREEMPTED)"
    # Leave things as the clear step expects: KEY registered, b gone.
    if prout(b, lun, 0x00, OTHER_KEY, 0) != 0:
        return "second initiator: unregister failed"
    b.close()
    settle(s, lun)
    if prout(s, lun, 0x00, 0, key) != 0:
        return "registering KEY again failed"
    return None


def main(argv):
    if len(argv) != 7 or argv[1] not in ("register", "check", "clear"):
        sys.exit(__doc__)
    step, host, port, iqn, lun, key = argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]), int(argv[6], 0)
    s = Session(host, port, iqn)
    settle(s, lun)
    if step == "register":
        st = prout(s, lun, 0x00, 0, key, aptpl=True)  # REGISTER
        if st != 0:
            return f"REGISTER with APTPL failed: status {st:#x}"
        st = prout(s, lun, 0x01, key, 0, aptpl=True, rtype=WRITE_EXCLUSIVE)  # RESERVE
        if st != 0:
            return f"RESERVE failed: status {st:#x}"
    elif step == "check":
        st, data = prin(s, lun, 0x00)  # READ KEYS
        if st != 0 or len(data) < 8:
            return f"READ KEYS failed: status {st:#x}"
        n = struct.unpack(">I", data[4:8])[0] // 8
        keys = [struct.unpack(">Q", data[8 + 8 * i:16 + 8 * i])[0] for i in range(n)]
        if key not in keys:
            return f"key {key:#x} not registered after restart (keys: {[hex(k) for k in keys]})"
        st, data = prin(s, lun, 0x01)  # READ RESERVATION
        if st != 0 or len(data) < 8:
            return f"READ RESERVATION failed: status {st:#x}"
        if struct.unpack(">I", data[4:8])[0] < 16:
            return "no reservation after restart"
        holder, rtype = struct.unpack(">Q", data[8:16])[0], data[21] & 0x0F
        if holder != key or rtype != WRITE_EXCLUSIVE:
            return f"reservation is key {holder:#x} type {rtype}, want {key:#x} type {WRITE_EXCLUSIVE}"
        # A fresh session of the registrant, before any PR command from it.
        s.close()
        s = Session(host, port, iqn)
        settle(s, lun)
        err = preempted_without_pr_commands(host, port, iqn, lun, s, key)
        if err:
            return err
    else:
        st = prout(s, lun, 0x00, key, 0)  # REGISTER with service action key 0: unregister
        if st != 0:
            return f"unregister failed: status {st:#x}"
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
