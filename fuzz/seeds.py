#!/usr/bin/env python3
"""Write the hand-made seed inputs the committed corpora grew from
(fuzz/seeds/<target>/). Run once before a long campaign on a new target;
scripts/fuzz.sh uses fuzz/corpus/<target> (+ these seeds when present)."""
import os, struct, subprocess, sys, tempfile

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# --- iSCSI PDUs: login request with keys, SCSI command with immediate data.
def bhs(op, flags, ahs, dlen, rest=b""):
    b = bytes([op, flags, 0, 0, ahs]) + dlen.to_bytes(3, "big") + rest
    return b.ljust(48, b"\0")
keys = b"InitiatorName=iqn.1994-05.com.redhat:abc\0SessionType=Normal\0TargetName=iqn.2026-11.org.rtarget:t1\0AuthMethod=None\0"
pad = lambda b: b + b"\0" * (-len(b) % 4)
put("pdu_frame", "login", bhs(0x43, 0x87, 0, len(keys)) + pad(keys))
put("pdu_frame", "scsi_cmd", bhs(0x01, 0xa1, 0, 512) + b"\xab" * 512 + bhs(0x01, 0xc1, 0, 0))
put("pdu_frame", "ahs", bhs(0x01, 0x81, 5, 0) + b"\0\x12\x01\0" + b"\x7f" * 16 + bytes(4))
put("pdu_frame", "nop", bhs(0x00, 0x80, 0, 0) * 3)

# --- login / text keys and CHAP.
put("login_keys", "normal", keys + b"HeaderDigest=CRC32C,None\0DataDigest=None\0MaxRecvDataSegmentLength=262144\0")
put("login_keys", "operational", b"InitialR2T=No\0ImmediateData=Yes\0MaxBurstLength=16776192\0FirstBurstLength=262144\0DefaultTime2Wait=2\0DefaultTime2Retain=0\0MaxOutstandingR2T=1\0DataPDUInOrder=Yes\0DataSequenceInOrder=Yes\0ErrorRecoveryLevel=0\0X-com.example:foo=bar\0")
put("login_keys", "discovery", b"SessionType=Discovery\0InitiatorName=iqn.x\0AuthMethod=CHAP,None\0")
put("chap", "alg", b"CHAP_A=5,7,6\0")
put("chap", "resp", b"CHAP_N=user\0CHAP_R=0x" + b"0123456789abcdef" * 2 + b"\0CHAP_I=17\0CHAP_C=0x" + b"a5" * 16 + b"\0")
put("chap", "b64", b"CHAP_N=user\0CHAP_R=0bASNFZ4mrze8BI0VniavN7w==\0")

# --- CDBs (selector byte: low 2 bits pick 6/10/12/16-byte CDB).
put("cdb", "inquiry", b"\x00" + bytes([0x12, 0, 0, 0, 96, 0]))
put("cdb", "vpd83", b"\x00" + bytes([0x12, 1, 0x83, 0x10, 0, 0]))
put("cdb", "read10", b"\x01" + bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]))
put("cdb", "write10", b"\x01" + bytes([0x2a, 0, 0, 0, 0, 2, 0, 0, 1, 0]) + b"\x5a" * 512)
put("cdb", "read16", b"\x03" + bytes([0x88, 0] + [0] * 7 + [4, 0, 0, 0, 8, 0, 0]))
put("cdb", "cmp_write", b"\x03" + bytes([0x89, 0] + [0] * 7 + [1, 0, 0, 0, 0, 1, 0]) + bytes(1024))
put("cdb", "report_luns", b"\x02" + bytes([0xa0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0]))
put("cdb", "rsoc", b"\x02" + bytes([0xa3, 0x0c, 0x02, 0, 0, 0, 0, 0, 16, 0, 0, 0]))
put("cdb", "get_lba_status", b"\x03" + bytes([0x9e, 0x12] + [0] * 8 + [0, 0, 0, 64, 0, 0]))

# --- NBD replies (mode byte, READ length / 16, then server bytes).
put("nbd_reply", "simple", bytes([0x00, 16]) + struct.pack(">IIQ", 0x67446698, 0, 7) + b"\xcd" * 256)
put("nbd_reply", "structured_data", bytes([0x01, 16]) + struct.pack(">IHHQI", 0x668e33ef, 1, 1, 7, 8 + 256) + struct.pack(">Q", 0) + b"\xcd" * 256)
put("nbd_reply", "structured_err", bytes([0x01, 16]) + struct.pack(">IHHQI", 0x668e33ef, 1, 32769, 7, 6) + struct.pack(">IH", 5, 0))
put("nbd_reply", "block_status", bytes([0x07 | (3 << 3), 0]) + struct.pack(">IHHQI", 0x668e33ef, 1, 5, 7, 12) + struct.pack(">III", 3, 4096, 3))
put("nbd_reply", "handshake", b"\x80\x00" + b"NBDMAGICIHAVEOPT" + struct.pack(">H", 3) + struct.pack(">QIII", 0x3e889045565a9, 1, 3, 12) + struct.pack(">QH", 1 << 20, 1) + b"\0" * 2)

# --- Parameter lists through the emulation.
def prout(nx, sa, st, params, pr_in=False):
    return bytes([nx | (0x80 if pr_in else 0), sa, st, len(params)]) + params
basic = lambda key, sakey, aptpl=0, flags=0: struct.pack(">QQ", key, sakey) + bytes(4) + bytes([flags | aptpl, 0, 0, 0])
tid = lambda name: (lambda n: bytes([0x05, 0]) + len(n).to_bytes(2, "big") + n)(pad(name.encode() + b"\0"))
put("pr_out", "register_reserve", prout(0, 0, 0, basic(0, 0xaa)) + prout(0, 1, 3, basic(0xaa, 0)) + prout(0, 0, 0, b"", True) + prout(0, 3, 0x10, b"", True))
put("pr_out", "preempt", prout(0, 0, 0, basic(0, 0xaa)) + prout(1, 0, 0, basic(0, 0xbb)) + prout(0, 1, 1, basic(0xaa, 0)) + prout(1, 4, 1, basic(0xbb, 0xaa)) + prout(0, 1, 0x20, b"", True))
spec = tid("iqn.2026-11.org.fuzz:i1,i,0x000000000001")
put("pr_out", "spec_i_pt", prout(0, 0, 0, basic(0, 0xaa, 0, 8) + len(spec).to_bytes(4, "big") + spec) + prout(0, 3, 0x40, b"", True))
put("pr_out", "aptpl", prout(0, 0, 0, basic(0, 0xaa, 1)) + prout(0, 1, 5, basic(0xaa, 0)) + prout(0, 2, 5, basic(0xaa, 0)) + prout(0, 6, 0, basic(0xaa, 0)))
tgt = tid("iqn.2026-11.org.fuzz:i2")
move = struct.pack(">QQ", 0xaa, 0xcc) + bytes([0, 0]) + struct.pack(">HI", 1, len(tgt)) + tgt
put("pr_out", "register_and_move", prout(0, 0, 0, basic(0, 0xaa)) + prout(0, 1, 3, basic(0xaa, 0)) + prout(0, 7, 3, move) + prout(2, 0, 0, b"", True))
put("pr_out", "clear", prout(0, 0, 0, basic(0, 0xaa)) + prout(1, 0, 0, basic(0, 0xbb)) + prout(1, 3, 0, basic(0xbb, 0)) + prout(0, 1, 0, b"", True))

unmap = lambda descs: struct.pack(">HH", 6 + 16 * len(descs), 16 * len(descs)) + bytes(4) + b"".join(struct.pack(">QI", l, n) + bytes(4) for l, n in descs)
put("unmap", "one", bytes([0, 0]) + unmap([(0, 8)]))
put("unmap", "many", bytes([0, 0]) + unmap([(0, 1), (10, 20), (100, 28)]))
put("unmap", "anchor", bytes([1, 1]) + unmap([(4, 4)]))
put("unmap", "past_end", bytes([0, 0]) + unmap([(120, 16)]))

ws10 = lambda flags, lba, n: bytes([0, flags]) + struct.pack(">IBH", lba, 0, n) + bytes(7)
ws16 = lambda flags, lba, n: bytes([1, flags]) + struct.pack(">QIBB", lba, n, 0, 0)
put("write_same", "ws10", ws10(0, 0, 8) + b"\xa5" * 512)
put("write_same", "ws16_unmap", ws16(0x08, 16, 32) + bytes(512))
put("write_same", "ws16_ndob", ws16(0x09, 0, 0))
put("write_same", "ws10_anchor", ws10(0x18, 4, 4) + bytes(512))

# Mode parameter lists: (6) header + caching page; (10) with a block descriptor.
caching = bytes([0x08, 0x12, 0x04]) + bytes(17)
control = bytes([0x0a, 0x0a, 0x02, 0x00, 0, 0, 0, 0, 0xff, 0xff, 0, 0x1e])
put("mode_select", "caching6", bytes([0x02]) + bytes([0, 0, 0, 0]) + caching)
put("mode_select", "control10", bytes([0x03]) + bytes([0, 0, 0, 0, 0, 0, 0, 0]) + control)
put("mode_select", "bd6", bytes([0x02]) + bytes([0, 0, 0, 8]) + struct.pack(">II", 128, 512) + caching)
put("mode_select", "bd10", bytes([0x03]) + bytes([0, 0, 0, 0, 0, 0, 0, 8]) + struct.pack(">II", 128, 512) + control + caching)

def xcopy(flags, tdescs, segs, list_id=1):
    t = b"".join(tdescs)
    s = b"".join(segs)
    return bytes([flags, list_id, 0x18]) + struct.pack(">H", len(t)) + bytes(3) + struct.pack(">I", len(s)) + bytes(4) + t + s
cscd = bytes([0xe4, 0, 0, 0]) + bytes(20) + bytes([0, 0, 0, 0, 0, 0, 2, 0])
seg = lambda s, d, n, sl, dl: bytes([0x02, 0]) + struct.pack(">HHH", 0x18, s, d) + bytes(2) + struct.pack(">HQQ", n, sl, dl)
put("xcopy", "copy_0_to_1", xcopy(0x01 | 0x04, [cscd, cscd], [seg(0, 1, 8, 0, 16)]))
put("xcopy", "copy_same", xcopy(0x01, [cscd, cscd], [seg(0, 0, 4, 0, 64), seg(0, 1, 2, 8, 8)]))
put("xcopy", "unpatched", xcopy(0x00, [cscd], [seg(0, 0, 1, 0, 1)]))

# --- Files and requests.
put("aptpl", "v1", "rtarget-pr 1\ngeneration=7\nreg\nkey=0x00000000000000aa\ninitiator=iqn.1994-05.com.redhat:abc,i,0x23d000000001\ntarget=iqn.2026-11.org.rtarget:t1,t,0x0001\nall_tg_pt=0\nrel_port=1\nholder=1\nend\nreservation_type=1\n")
put("aptpl", "v2", "rtarget-pr 2\ngeneration=3\nreg\nkey=170\ninitiator=iqn.a%0Ab,i,0x1\ntarget=t%25\nall_tg_pt=1\nrel_port=2\nholder=0\nend\nreg\nkey=0xbb\ninitiator=iqn.c\ntarget=iqn.t\nall_tg_pt=0\nrel_port=1\nholder=0\nend\nreservation_type=7\n")
req = ['{"op":"ls","path":"/","depth":2,"width":80}', '{"op":"create","path":"/backstores/fileio","argv":["disk0","/tmp/x","1G"],"args":{"write_back":false}}',
       '{"op":"set","path":"/iscsi/iqn.x/tpg1","group":"attribute","values":{"authentication":"1"}}', '{"op":"get","path":"/","group":"global","names":["auto_save_on_exit"]}',
       '{"op":"resize","path":"/backstores/ramdisk/r0","size":"2G"}', '{"op":"resize","path":"/x","size":4096}', '{"op":"clearconfig","confirm":"yes"}',
       '{"op":"saveconfig","file":"/tmp/s.json"}', '{"op":"sessions","detail":true}', '{"op":"delete","path":"/x","argv":["a"]}', '{"op":"info"}', '{"op":"enable","path":"/iscsi"}']
for i, r in enumerate(req):
    put("api_request", f"req{i}", r)

# --- qcow2 images (512-byte clusters keep them a few KiB), plus a leading
# ops byte for qcow2_meta.
if subprocess.run(["which", "qemu-img"], capture_output=True).returncode == 0:
    with tempfile.TemporaryDirectory() as d:
        imgs = {}
        def mk(name, *args, io=None):
            p = os.path.join(d, name)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args[:-1], p, args[-1]], check=True)
            if io:
                subprocess.run(["qemu-io", "-f", "qcow2", *sum((["-c", c] for c in io), []), p], check=True, capture_output=True)
            imgs[name] = open(p, "rb").read()
        mk("empty", "-o", "cluster_size=512", "64K")
        mk("written", "-o", "cluster_size=512", "64K", io=["write -P 0xab 0 4k", "write -z 8k 1k", "write -P 1 60k 512"])
        mk("v2", "-o", "cluster_size=512,compat=0.10", "32K", io=["write -P 7 1k 2k"])
        mk("rc1", "-o", "cluster_size=512,refcount_bits=1", "64K", io=["write 0 1k"])
        mk("rc64", "-o", "cluster_size=1024,refcount_bits=64", "64K", io=["write 2k 1k"])
        mk("ext_l2", "-o", "cluster_size=16k,extended_l2=on", "1M", io=["write 0 512"])
        raw = os.path.join(d, "raw")
        with open(raw, "wb") as f:
            f.write(b"compress me " * 512)
        c = os.path.join(d, "compressed")
        subprocess.run(["qemu-img", "convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4k", raw, c], check=True)
        imgs["compressed"] = open(c, "rb").read()
        for name, b in imgs.items():
            if len(b) <= 64 << 10:
                put("qcow2_header", name, b)
                for ops in (0x00, 0x0f, 0x7f, 0x80):
                    put("qcow2_meta", f"{name}-{ops:02x}", bytes([ops]) + b)

# --- saveconfig.json: the targetcli sample and small hand-written ones.
sample = os.path.join(os.path.dirname(root), "..", "crates", "config", "tests", "data", "targetcli-sample.json")
put("saveconfig", "targetcli-sample", open(sample, "rb").read())
put("saveconfig", "small", '{"fabric_modules":[],"storage_objects":[{"plugin":"ramdisk","name":"r0","size":1048576,"wwn":"6a1c0f2e-1234-4bcd-9ef0-0123456789ab","attributes":{"block_size":512,"emulate_tpu":1,"io_engine":"pool"}}],"targets":[{"fabric":"iscsi","wwn":"iqn.2026-11.org.rtarget:t1","tpgs":[{"tag":1,"enable":true,"attributes":{"authentication":0,"generate_node_acls":1},"parameters":{"HeaderDigest":"CRC32C,None","MaxRecvDataSegmentLength":"262144"},"luns":[{"index":0,"storage_object":"/backstores/ramdisk/r0","alua_tg_pt_gp_name":"default_tg_pt_gp"}],"portals":[{"ip_address":"127.0.0.1","port":3260}],"node_acls":[{"node_wwn":"iqn.x","attributes":{"dataout_timeout":3},"chap_userid":"u","chap_password":"p","mapped_luns":[{"index":0,"tpg_lun":0,"write_protect":false}]}]}]}]}')
print("seeds in", root)
