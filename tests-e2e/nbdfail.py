#!/usr/bin/env python3
"""An NBD server that fails on purpose (python3 stdlib only), for faults.py.

usage: nbdfail.py SOCKET IMAGE BAD_READ_OFFSET BAD_WRITE_OFFSET

Serves IMAGE (a file, its whole size) as export "disk0" on the unix SOCKET, fixed
newstyle, simple replies only (it refuses structured replies and meta contexts,
which a client must cope with). Every READ that touches the 4 KiB at
BAD_READ_OFFSET and every WRITE that touches the 4 KiB at BAD_WRITE_OFFSET is
answered EIO; everything else is served from the file. One thread per client.
"""
import os
import socket
import struct
import sys
import threading

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
OPT_EXPORT_NAME, OPT_ABORT, OPT_GO = 1, 2, 7
REP_ACK, REP_INFO, REP_ERR_UNSUP = 1, 3, (1 << 31) + 1
TF_HAS_FLAGS, TF_SEND_FLUSH, TF_SEND_FUA = 1, 4, 8
EIO, EINVAL = 5, 22


def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def serve(c, fd, size, bad_read, bad_write):
    flags = TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA
    c.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 1 | 2))  # fixed newstyle, no zeroes
    recv_exact(c, 4)
    while True:
        magic, opt, n = struct.unpack(">QII", recv_exact(c, 16))
        data = recv_exact(c, n)
        if magic != IHAVEOPT:
            return
        if opt == OPT_EXPORT_NAME:
            c.sendall(struct.pack(">QH", size, flags))
            break
        if opt == OPT_ABORT:
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            return
        if opt == OPT_GO:
            info = struct.pack(">HQH", 0, size, flags)
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_INFO, len(info)) + info)
            c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ACK, 0))
            break
        c.sendall(struct.pack(">QIII", REPLY_MAGIC, opt, REP_ERR_UNSUP, 0))
    while True:
        magic, cflags, typ, handle, off, length = struct.unpack(">IHHQQI", recv_exact(c, 28))
        if magic != 0x25609513:
            return
        payload = recv_exact(c, length) if typ == 1 else b""

        def hits(bad):
            return bad >= 0 and off < bad + 4096 and bad < off + length

        err, out = 0, b""
        if typ == 0:  # READ
            if hits(bad_read):
                err = EIO
            elif off + length > size:
                err = EINVAL
            else:
                out = os.pread(fd, length, off)
        elif typ == 1:  # WRITE
            if hits(bad_write):
                err = EIO
            else:
                os.pwrite(fd, payload, off)
                if cflags & 1:
                    os.fdatasync(fd)
        elif typ == 2:  # DISC: the client is done
            return
        elif typ == 3:  # FLUSH
            os.fdatasync(fd)
        else:
            err = EINVAL
        c.sendall(struct.pack(">IIQ", 0x67446698, err, handle) + (out if not err else b""))


def client(c, fd, size, bad_read, bad_write):
    try:
        serve(c, fd, size, bad_read, bad_write)
    except (EOFError, OSError):
        pass
    finally:
        c.close()


def main(argv):
    if len(argv) != 5:
        sys.exit(__doc__)
    path, image, bad_read, bad_write = argv[1], argv[2], int(argv[3]), int(argv[4])
    fd = os.open(image, os.O_RDWR)
    size = os.fstat(fd).st_size
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(16)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=client, args=(c, fd, size, bad_read, bad_write),
                         daemon=True).start()


if __name__ == "__main__":
    main(sys.argv)
