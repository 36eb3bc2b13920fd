#!/usr/bin/env python3
"""An RBD image resized with the `rbd` CLI (as another host would) reaches a
logged-in initiator as CAPACITY DATA HAS CHANGED (2A/09), then READ CAPACITY
shows the new size, without a relogin (tests-e2e/rbd.sh runs it).

usage: rbd_resize.py PORT IQN LUN NEW_SIZE_MIB RBD_ARGS...
"""
import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rwsession import RwSession  # noqa: E402
from malformed import sense_kcq  # noqa: E402


def main(argv):
    port, iqn, lun, new_mib, rbd = int(argv[1]), argv[2], int(argv[3]), int(argv[4]), argv[5:]
    s = RwSession("127.0.0.1", port, iqn)
    s.ready(lun)
    blocks, bs = s.capacity(lun)
    print(f"before: {blocks * bs >> 20} MiB")
    subprocess.run(["rbd", *rbd, "--size", f"{new_mib}M"], check=True)
    # The watch notification is asynchronous: poll the initiator's view (each
    # TEST UNIT READY is the event check) for up to 20 s.
    deadline = time.monotonic() + 20
    while True:
        st, _, sense = s.execute(b"\0" * 6, lun)
        if st == 0x02:
            kcq = sense_kcq(sense)
            if kcq != (6, 0x2A, 0x09):
                raise SystemExit(f"unexpected CHECK CONDITION {kcq}")
            break
        if time.monotonic() > deadline:
            raise SystemExit("no CAPACITY DATA HAS CHANGED within 20 s")
        time.sleep(0.1)
    blocks, bs = s.capacity(lun)
    print(f"after: {blocks * bs >> 20} MiB (2A/09 seen)")
    if blocks * bs != new_mib << 20:
        raise SystemExit(f"READ CAPACITY says {blocks * bs}, not {new_mib} MiB")
    s.logout()


if __name__ == "__main__":
    main(sys.argv)
