#!/usr/bin/env python3
"""Reads past the end of a LUN, sent to the target itself.

usage: eol.py HOST PORT IQN LUN
QEMU's block layer refuses a request beyond the image size before it reaches
the wire, so this sends the commands raw: READ CAPACITY(16) for the last LBA,
then READ(16) of the last block (must be GOOD: the boundary is exact), READ(16)
of the first block past it and READ(10) of two blocks across it (each must be
CHECK CONDITION, ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE, sense
05/21/00, and return no data).  Prints one line per command; exit status 1 on
any other answer.
"""
import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import Session, sense_kcq  # noqa: E402  (same directory)


def read16(lba, blocks):
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def read10(lba, blocks):
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    host, port, iqn, lun = argv[1], int(argv[2]), argv[3], int(argv[4])
    s = Session(host, port, iqn)
    for _ in range(3):  # the power-on unit attention goes first
        if s.command(b"\x00" * 6, lun, 0)[0] == 0:
            break
    st, data = s.command(bytes([0x9E, 0x10]) + b"\0" * 8 + struct.pack(">I", 32) + b"\0\0", lun, 32)
    if st != 0 or len(data) < 12:
        sys.exit(f"READ CAPACITY(16): status {st:#x}, {len(data)} bytes")
    last, bs = struct.unpack(">QI", data[:12])
    print(f"READ CAPACITY(16): last LBA {last}, {bs}-byte blocks")
    probes = [("READ(16) of the last block", read16(last, 1), bs, "good")]
    probes.append(("READ(16) of the first block past the end", read16(last + 1, 1), bs, "lba"))
    if last + 1 < 1 << 32:
        probes.append(("READ(10) of 2 blocks across the end", read10(last, 2), 2 * bs, "lba"))
    bad = 0
    for what, cdb, edtl, want in probes:
        st, data = s.command(cdb, lun, edtl)
        kcq = sense_kcq(s.sense) if st == 2 else None
        got = "GOOD" if st == 0 else f"status {st:#x}" + (
            f" sense {kcq[0]:02x}/{kcq[1]:02x}/{kcq[2]:02x}" if kcq else " without sense")
        if want == "good":
            ok = st == 0 and len(data) == bs
        else:
            ok = st == 2 and kcq == (0x05, 0x21, 0x00) and not data
        bad += not ok
        print(f"{'ok' if ok else 'WRONG'} {what}: {got}, {len(data)} bytes"
              + ("" if ok else " (want " + ("GOOD" if want == "good" else
                                          "CHECK CONDITION 05/21/00, no data") + ")"))
    s.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
