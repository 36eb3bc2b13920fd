"""A minimal raw iSCSI initiator that reads and writes (python3 stdlib only),
for the reliability campaign (crash.py, chaos.py, faults.py).

Each session has its own ISID (so many can be logged in from one initiator
name without reinstating each other), negotiates ImmediateData=Yes and sends
every write as immediate data (writes are at most 8 KiB, under any target's
MaxRecvDataSegmentLength), one command at a time.
"""
import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from malformed import keys, pad, recv_pdu, scsi_cmd, sense_kcq  # noqa: E402,F401

_next_isid = [os.getpid() & 0xFFFF, 0]


def new_isid():
    """A random-qualifier ISID unique within this process."""
    _next_isid[1] += 1
    return bytes([0x80, 0x00]) + struct.pack(">HH", _next_isid[0], _next_isid[1] & 0xFFFF)


class CheckCondition(Exception):
    def __init__(self, what, kcq):
        super().__init__(f"{what}: CHECK CONDITION {kcq}")
        self.kcq = kcq


class RwSession:
    def __init__(self, host, port, iqn, initiator="iqn.2026-11.org.rtarget:reliability",
                 timeout=10.0, isid=None):
        t0 = time.monotonic()
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cmdsn, self.expstatsn, self.itt = 1, 0, 1
        isid = isid or new_isid()
        kv = {"InitiatorName": initiator, "TargetName": iqn, "SessionType": "Normal",
              "HeaderDigest": "None", "DataDigest": "None",
              "MaxRecvDataSegmentLength": 262144, "ImmediateData": "Yes",
              "InitialR2T": "Yes", "MaxBurstLength": 262144, "FirstBurstLength": 65536,
              "ErrorRecoveryLevel": 0, "MaxConnections": 1}
        data = keys(kv)
        for _ in range(6):
            flags = 0x80 | (1 << 2) | 3
            bhs = struct.pack(">BBBB B3s 6sH I HH I I 16x", 0x43, flags, 0, 0, 0,
                              len(data).to_bytes(3, "big"), isid, 0, 0, 1, 0,
                              self.cmdsn, 0)
            self.s.sendall(bhs + pad(data))
            rbhs, _ = recv_pdu(self.s)
            if rbhs[0] & 0x3F != 0x23:
                raise RuntimeError(f"login: unexpected opcode {rbhs[0]:#x}")
            if rbhs[36] != 0:
                raise RuntimeError(f"login rejected: class {rbhs[36]} detail {rbhs[37]}")
            self.expstatsn = struct.unpack(">I", rbhs[24:28])[0] + 1
            if rbhs[1] & 0x80 and rbhs[1] & 3 == 3:
                self.login_seconds = time.monotonic() - t0
                return
            data = b""
        raise RuntimeError("login did not reach full feature phase")

    def execute(self, cdb, lun=0, edtl=0, data=b""):
        """One command; returns (status, data-in, sense)."""
        itt = self.itt
        self.itt += 1
        write = bool(data)
        self.s.sendall(scsi_cmd(cdb, lun, itt, self.cmdsn, self.expstatsn,
                                edtl=len(data) if write else edtl, read=not write and edtl > 0,
                                write=write, data=data))
        self.cmdsn += 1
        got = b""
        while True:
            bhs, seg = recv_pdu(self.s)
            op = bhs[0] & 0x3F
            if op == 0x25:
                got += seg
                if bhs[1] & 0x01:
                    self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
                    return bhs[3], got, b""
            elif op == 0x21:
                self.expstatsn = struct.unpack(">I", bhs[24:28])[0] + 1
                n = int.from_bytes(seg[:2], "big") if len(seg) >= 2 else 0
                return bhs[3], got, seg[2:2 + n]
            elif op == 0x20:
                continue
            else:
                raise RuntimeError(f"unexpected opcode {op:#x} (reason {bhs[2]:#x})")

    def checked(self, what, cdb, lun=0, edtl=0, data=b""):
        st, got, sense = self.execute(cdb, lun, edtl, data)
        if st == 0x02:
            raise CheckCondition(what, sense_kcq(sense))
        if st != 0:
            raise RuntimeError(f"{what}: status {st:#x}")
        return got

    def ready(self, lun=0):
        """TEST UNIT READY until GOOD (the unit attentions after login go first)."""
        for _ in range(5):
            if self.execute(b"\0" * 6, lun)[0] == 0:
                return
        raise RuntimeError("TEST UNIT READY never GOOD")

    def capacity(self, lun=0):
        """(number of blocks, block size) from READ CAPACITY(16)."""
        d = self.checked("READ CAPACITY(16)", bytes([0x9E, 0x10]) + b"\0" * 8
                         + struct.pack(">I", 32) + b"\0\0", lun, 32)
        last, bs = struct.unpack(">QI", d[:12])
        return last + 1, bs

    def write(self, lba, data, bs, lun=0, fua=False):
        cdb = struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, len(data) // bs, 0)
        self.checked(f"WRITE(10) at {lba}", cdb, lun, data=data)

    def read(self, lba, blocks, bs, lun=0):
        cdb = struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)
        return self.checked(f"READ(10) at {lba}", cdb, lun, blocks * bs)

    def sync(self, lun=0):
        self.checked("SYNCHRONIZE CACHE(10)", bytes([0x35]) + b"\0" * 9, lun)

    def logout(self):
        try:
            bhs = struct.pack(">BBH B3s 8x I I I I 16x", 0x46, 0x80, 0, 0, b"\0\0\0",
                              self.itt, 0, self.cmdsn, self.expstatsn)
            self.s.sendall(bhs)
            self.s.settimeout(5)
            recv_pdu(self.s)
        except (OSError, RuntimeError, Exception):  # noqa: B014  a lost logout is fine
            pass
        self.close()

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def rss_kib(pid):
    """VmRSS of a process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def api(sock, req):
    """One request to the daemon's API socket; returns the decoded answer."""
    import json
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(json.dumps(req).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)


def percentile(values, p):
    v = sorted(values)
    if not v:
        return 0.0
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RTARGET = os.environ.get("RTARGET_BIN") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "rtarget")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def mkconfig(out, port, iqn, *specs):
    import subprocess
    subprocess.run([sys.executable, os.path.join(HERE, "mkconfig.py"), out, str(port), iqn,
                    *specs], check=True)


def _thread_state(pid, tid):
    """The scheduler state letter of one thread (None: it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            # "tid (comm) S ...": comm may hold spaces and parentheses.
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class Daemon:
    """`rtarget serve` on DIR/saveconfig.json, 127.0.0.1:PORT, API on DIR/api.sock;
    its log goes to DIR/rtarget.log (appended across restarts)."""

    def __init__(self, workdir, port):
        self.dir, self.port = workdir, port
        self.sock = os.path.join(workdir, "api.sock")
        self.log = os.path.join(workdir, "rtarget.log")
        self.proc = None

    def start(self, timeout=20):
        import subprocess
        logf = open(self.log, "ab")
        mark = os.path.getsize(self.log)
        self.proc = subprocess.Popen(
            [RTARGET, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--config", os.path.join(self.dir, "saveconfig.json"), "--state-dir", self.dir,
             "--socket", self.sock], stdout=subprocess.DEVNULL, stderr=logf)
        logf.close()
        # Never outlive the driver (an exception, or a time limit's SIGTERM).
        import atexit
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(mark)
                if b"rtarget: listening on" in f.read():
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtarget exited at start (see {self.log})")
            time.sleep(0.02)
        raise RuntimeError(f"rtarget did not listen within {timeout} s (see {self.log})")

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        import signal
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def sigstop(self, timeout=10):
        """SIGSTOP the daemon and return once every thread is stopped.

        kill() only queues the stop: one thread has to run to start the group
        stop, and meanwhile another thread (a connection waking on data the
        test sends next) may still serve a command. Tests that queue commands
        at a stopped daemon must wait for this."""
        import signal
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_thread_state(self.pid, t) in ("T", "t", None)
                   for t in os.listdir(f"/proc/{self.pid}/task")):
                return
            time.sleep(0.001)
        raise RuntimeError(f"rtarget {self.pid} did not stop within {timeout} s")

    def sigcont(self):
        import signal
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:  # noqa: BLE001
                self.kill9()

    def panics(self):
        """The daemon's panic count (API ping) plus panics in its log."""
        n = 0
        try:
            n = int(api(self.sock, {"op": "ping"}).get("panics", 0))
        except (OSError, ValueError):
            pass
        with open(self.log, "rb") as f:
            return max(n, f.read().count(b"panicked at"))
