#!/usr/bin/env python3
"""Check every VPD page a LUN lists in page 0x00, with raw INQUIRY commands.

usage: vpd.py HOST PORT IQN LUN
iscsi-inq only decodes the pages libiscsi knows, so this reads each listed page
itself and checks the header: peripheral device type byte equal to the
standard INQUIRY's, page code echoed, PAGE LENGTH consistent with the data
returned (a full read with ALLOCATION LENGTH = 4 + PAGE LENGTH returns exactly
that), the list sorted ascending and containing 0x00 itself. Prints one line
per page; exit status 1 on any problem.
"""
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import Session  # noqa: E402  (same directory)


def inquiry(s, lun, page, alloc):
    cdb = bytes([0x12, 1, page, alloc >> 8, alloc & 0xFF, 0])
    return s.command(cdb, lun, alloc)


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    host, port, iqn, lun = argv[1], int(argv[2]), argv[3], int(argv[4])
    s = Session(host, port, iqn)
    bad = 0
    st, std = s.command(bytes([0x12, 0, 0, 0, 36, 0]), lun, 36)
    for _ in range(2):  # a pending unit attention may answer the first command
        if st == 0:
            break
        st, std = s.command(bytes([0x12, 0, 0, 0, 36, 0]), lun, 36)
    if st != 0 or not std:
        print(f"standard INQUIRY failed (status {st:#x})")
        return 1
    pdt = std[0]
    st, p0 = inquiry(s, lun, 0, 255)
    if st != 0 or len(p0) < 4:
        print(f"VPD 0x00 failed (status {st:#x}, {len(p0)} bytes)")
        return 1
    pages = list(p0[4:4 + int.from_bytes(p0[2:4], "big")])
    if pages != sorted(pages) or 0 not in pages:
        print(f"VPD 0x00 list not ascending or lacks 0x00: {[hex(p) for p in pages]}")
        bad += 1
    for page in pages:
        st, head = inquiry(s, lun, page, 4)
        if st != 0 or len(head) != 4:
            print(f"FAIL page {page:#04x}: header read status {st:#x}, {len(head)} bytes")
            bad += 1
            continue
        plen = int.from_bytes(head[2:4], "big")
        st, data = inquiry(s, lun, page, 4 + plen)
        problems = []
        if st != 0:
            problems.append(f"status {st:#x}")
        if data[:1] != bytes([pdt]):
            problems.append(f"byte 0 {data[:1].hex()} != standard INQUIRY's {pdt:#04x}")
        if len(data) < 2 or data[1] != page:
            problems.append("page code not echoed")
        if len(data) != 4 + plen:
            problems.append(f"{len(data)} bytes for PAGE LENGTH {plen}")
        if problems:
            bad += 1
            print(f"FAIL page {page:#04x}: " + "; ".join(problems))
        else:
            print(f"ok   page {page:#04x}: {plen} bytes")
    s.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
