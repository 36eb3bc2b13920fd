#!/usr/bin/env python3
"""Write an rtslib-fb style saveconfig.json for rtarget test runs.

usage: mkconfig.py OUT PORT IQN LUNSPEC...
  LUNSPEC = fileio:NAME:PATH:SIZE[:attr=val,...] | ramdisk:NAME::SIZE[:attr=val,...]
          | block:NAME:PATH:[:attr=val,...]       (a block device or raw file;
                                                   attr o_direct=1 bypasses the cache)
          | qcow:NAME:PATH:SIZE[:attr=val,...]    (user:qcow; created when missing)
          | qemu:NAME:PATH:[SIZE][:format=F,...]  (user:qemu; format defaults to
                                                   the file extension; optional qemu
                                                   options as opt_KEY=VAL)
          | nbd:NAME:SOCKET:[:export=E,...]       (user:nbd to nbd+unix://)
SIZE accepts K/M/G suffixes. Attributes land in the storage object's
"attributes" except "ro=1", which sets the TPG's demo_mode_write_protect, and
"write_back=0", which makes a fileio object write-through. One iSCSI target,
tpg 1, portal 127.0.0.1:PORT, open access (generate_node_acls=1, no CHAP).
Fileio images are created sparse when missing.
"""
import json
import os
import sys
import uuid


def size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1].upper() in mult:
        return int(text[:-1]) * mult[text[-1].upper()]
    return int(text)


def attrs(text):
    out = {}
    for kv in filter(None, (text or "").split(",")):
        k, _, v = kv.partition("=")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    out, port, iqn, specs = argv[1], int(argv[2]), argv[3], argv[4:]
    sos, luns, any_ro = [], [], False
    for idx, spec in enumerate(specs):
        parts = spec.split(":", 4)
        parts += [""] * (5 - len(parts))
        plugin, name, path, sz, extra = parts
        a = attrs(extra)
        ro = int(a.pop("ro", 0))
        wb = bool(int(a.pop("write_back", 1)))
        so = {"plugin": plugin, "name": name}
        if plugin == "fileio":
            path = os.path.abspath(path)
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.truncate(size(sz))
            so.update(dev=path, size=size(sz), write_back=wb)
        elif plugin == "ramdisk":
            so.update(size=size(sz))
        elif plugin == "block":
            so.update(dev=os.path.abspath(path), write_back=False, readonly=False)
        elif plugin == "qcow":
            so.update(plugin="user", config="qcow/" + os.path.abspath(path))
            if sz:
                so.update(size=size(sz))
        elif plugin == "qemu":
            path = os.path.abspath(path)
            fmt = a.pop("format", os.path.splitext(path)[1].lstrip(".") or "raw")
            opts = "".join(f";{k[4:]}={a.pop(k)}" for k in list(a) if k.startswith("opt_"))
            so.update(plugin="user", config=f"qemu/{fmt}/{path}{opts}")
            if sz and size(sz):
                so.update(size=size(sz))
        elif plugin == "nbd":
            export = a.pop("export", "")
            so.update(plugin="user",
                      config=f"nbd/nbd+unix:///{export}?socket={os.path.abspath(path)}")
        else:
            sys.exit(f"mkconfig: unknown plugin {plugin}")
        so["wwn"] = str(uuid.uuid4())
        so["attributes"] = a
        sos.append(so)
        # rtslib references user objects as /backstores/user/NAME.
        luns.append({"index": idx, "storage_object": f"/backstores/{so['plugin']}/{name}"})
        any_ro = any_ro or bool(ro)
    cfg = {
        "fabric_modules": [],
        "storage_objects": sos,
        "targets": [{
            "fabric": "iscsi",
            "wwn": iqn,
            "tpgs": [{
                "tag": 1,
                "enable": True,
                "attributes": {"generate_node_acls": 1, "authentication": 0,
                               "demo_mode_write_protect": int(any_ro),
                               "cache_dynamic_acls": 1},
                "parameters": {},
                "luns": luns,
                "portals": [{"ip_address": "127.0.0.1", "port": port}],
                "node_acls": [],
            }],
        }],
    }
    with open(out, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
