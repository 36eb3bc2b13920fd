#!/usr/bin/env python3
"""Why Data-In is not sent with sendfile(2) from the page cache (BENCHMARKS.md,
"sendfile Data-In for fileio: not safe"). sendfile/splice queue *references* to
page-cache pages in the socket; over loopback the peer copies them only when it
reads its socket. So a WRITE the target runs after sendfile returned, even after
the peer's TCP acknowledged every byte (SIOCOUTQ == 0), changes what the peer
reads as the READ's data. Prints what the peer saw: 'A' = data at sendfile time
(what a READ must return), 'B' = data written after sendfile returned.

    python3 bench/sendfile-hazard.py [DIR ...]   (default: /dev/shm /var/tmp)
"""
import fcntl
import os
import socket
import struct
import sys
import termios
import time

LEN = 256 << 10


def unacked(sock):
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def run(directory):
    path = os.path.join(directory, f"sendfile-hazard.{os.getpid()}")
    with open(path, "wb") as f:
        f.write(b"A" * LEN)
    fd = os.open(path, os.O_RDWR)
    os.unlink(path)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    peer = socket.socket()
    # Room for the whole "READ": everything is sent and acknowledged.
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    peer.connect(srv.getsockname())
    target, _ = srv.accept()
    target.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sent = 0
    while sent < LEN:
        sent += os.sendfile(target.fileno(), fd, sent, LEN - sent)
    deadline = time.monotonic() + 1
    while unacked(target) and time.monotonic() < deadline:
        time.sleep(0.001)
    outq = unacked(target)
    os.pwrite(fd, b"B" * LEN, 0)  # the WRITE, after the READ was "flushed"
    got = b""
    while len(got) < LEN:
        got += peer.recv(LEN - len(got))
    seen = {chr(c): got.count(c) for c in sorted(set(got))}
    print(f"{directory}: sendfile returned, unacked bytes {outq}; peer read {seen}")
    return seen.get("B", 0) > 0


if __name__ == "__main__":
    dirs = sys.argv[1:] or ["/dev/shm", "/var/tmp"]
    hazard = [run(d) for d in dirs]
    print("later writes show through:", "yes" if any(hazard) else "no")
