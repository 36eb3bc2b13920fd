#!/usr/bin/env python3
"""Reservations shared by two gateways of one RBD image, over raw iSCSI.

usage: rbd_pr.py reserve  HOST PORT IQN LUN KEY  initiator 1 REGISTERs KEY (APTPL=0)
                                                 and RESERVEs Write Exclusive with it
       rbd_pr.py conflict HOST PORT IQN LUN KEY  initiator 2 (another InitiatorName)
                                                 sees KEY in READ KEYS and holding the
                                                 reservation, and its WRITE gets
                                                 RESERVATION CONFLICT (KEY 0: only
                                                 the WRITE, for an SPC-2 reservation)
       rbd_pr.py release  HOST PORT IQN LUN KEY  initiator 1 unregisters KEY (which
                                                 releases the reservation)
       rbd_pr.py writes   HOST PORT IQN LUN KEY  initiator 2's WRITE is GOOD
       rbd_pr.py spc2     HOST PORT IQN LUN 0    initiator 1 RESERVE(6)s the LU
       rbd_pr.py spc2-release HOST PORT IQN LUN 0  initiator 1 RELEASE(6)s it
Exit status 0 when the step did what it says; a message says what went wrong.
"""
import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import malformed  # noqa: E402
from aptpl import WRITE_EXCLUSIVE, other_session, prin, prout, settle  # noqa: E402
from malformed import Session  # noqa: E402

# A change waits (bounded, seconds) for every gateway watching the image to
# reload, a gateway that just died included until its watch expires.
malformed.TIMEOUT = 20.0

RESERVATION_CONFLICT = 0x18


def write1(s, lun):
    """WRITE(10) of block 0 (512 bytes of immediate data); the status."""
    return s.write(bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), lun, bytes(512))


def main(argv):
    steps = ("reserve", "conflict", "release", "writes", "spc2", "spc2-release")
    if len(argv) != 7 or argv[1] not in steps:
        sys.exit(__doc__)
    step, host, port, iqn, lun, key = argv[1], argv[2], int(argv[3]), argv[4], int(argv[5]), int(argv[6], 0)
    if step in ("conflict", "writes"):
        s = other_session(host, port, iqn)
    else:
        s = Session(host, port, iqn)
    if step == "conflict" and key == 0:
        # No TEST UNIT READY to settle: it conflicts with an SPC-2 reservation.
        for _ in range(8):
            if (st := write1(s, lun)) != 0x02:  # past the power-on UA
                break
        if st != RESERVATION_CONFLICT:
            return f"WRITE from another initiator: status {st:#x}, want RESERVATION CONFLICT"
        s.close()
        return 0
    settle(s, lun)
    if step == "reserve":
        if (st := prout(s, lun, 0x00, 0, key)) != 0:
            return f"REGISTER failed: status {st:#x}"
        if (st := prout(s, lun, 0x01, key, 0, rtype=WRITE_EXCLUSIVE)) != 0:
            return f"RESERVE failed: status {st:#x}"
    elif step == "conflict":
        st, data = prin(s, lun, 0x00)
        n = struct.unpack(">I", data[4:8])[0] // 8 if st == 0 else 0
        keys = [struct.unpack(">Q", data[8 + 8 * i:16 + 8 * i])[0] for i in range(n)]
        if keys != [key]:
            return f"READ KEYS: status {st:#x}, keys {[hex(k) for k in keys]}, want [{key:#x}]"
        st, data = prin(s, lun, 0x01)
        if st != 0 or len(data) < 22 or struct.unpack(">Q", data[8:16])[0] != key:
            return f"READ RESERVATION does not show {key:#x} holding it"
        if (st := write1(s, lun)) != RESERVATION_CONFLICT:
            return f"WRITE from another initiator: status {st:#x}, want RESERVATION CONFLICT"
    elif step == "release":
        if (st := prout(s, lun, 0x00, key, 0)) != 0:
            return f"unregister failed: status {st:#x}"
    elif step == "writes":
        if (st := write1(s, lun)) != 0:
            return f"WRITE from another initiator: status {st:#x}, want GOOD"
    elif step == "spc2":
        st, _ = s.command(bytes([0x16, 0, 0, 0, 0, 0]), lun, 0)
        if st != 0:
            return f"RESERVE(6) failed: status {st:#x}"
        # Keep the session (the holder's nexus) until the caller is done:
        # its loss would release the reservation.
        sys.stdout.write("reserved\n")
        sys.stdout.flush()
        sys.stdin.read()
    elif step == "spc2-release":
        st, _ = s.command(bytes([0x17, 0, 0, 0, 0, 0]), lun, 0)
        if st != 0:
            return f"RELEASE(6) failed: status {st:#x}"
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
