#!/usr/bin/env python3
"""Independent sanity check of test/vectors/kernel-gso.json.

    python3 scripts/check-gso-vectors.py [PATH] [--verbose]

Parses every input super-frame and every captured segment from scratch and
checks, per segment:
  * IPv4 header checksum valid, total length / IPv6 payload length right
  * mode "full":    the TCP/UDP checksum verifies over the segment
  * mode "partial": vnet NEEDS_CSUM with csumStart = L4 offset and the right
                    csumOffset, and the checksum field holds the folded,
                    non-complemented pseudo-header sum for the segment's L4
                    length (completing it then verifies)
  * every header byte equals the super-frame's, except the fields GSO is
    expected to rewrite (IPv4 total length/ID/checksum, IPv6 payload length,
    TCP seq/flags/checksum, UDP length/checksum)
  * TCP: seq advances by gso_size; CWR only on the first segment, PSH/FIN
    only on the last; IPv4 ID = input ID + segment index (mod 2^16)
  * concatenated payloads equal the input payload
Exits non-zero on any failure; prints one line per case.
"""
import json
import struct
import sys


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def csum16(b, init=0):
    if len(b) & 1:
        b = b + b"\0"
    s = init
    for i in range(0, len(b), 2):
        s += (b[i] << 8) | b[i + 1]
    return fold(s)


def pseudo(src, dst, proto, n):
    if len(src) == 4:
        return csum16(src + dst + bytes([0, proto]) + n.to_bytes(2, "big"))
    return csum16(src + dst + n.to_bytes(4, "big") + bytes([0, 0, 0, proto]))


def parse(fr):
    """Return dict with offsets and fields of an Ethernet/IP/TCP|UDP frame."""
    p = {"tags": []}
    off = 12
    while True:
        et = struct.unpack_from("!H", fr, off)[0]
        if et in (0x8100, 0x88A8):
            p["tags"].append((et, struct.unpack_from("!H", fr, off + 2)[0]))
            off += 4
            continue
        break
    off += 2
    p["l3"] = off
    if et == 0x0800:
        p["v"] = 4
        ihl = (fr[off] & 0xF) * 4
        p["ihl"] = ihl
        p["totlen"], p["id"], p["frag"] = struct.unpack_from("!HHH", fr, off + 2)
        proto = fr[off + 9]
        p["src"], p["dst"] = fr[off + 12:off + 16], fr[off + 16:off + 20]
        l4 = off + ihl
        p["l3len_ok"] = p["totlen"] == len(fr) - off
        p["iphcsum_ok"] = csum16(fr[off:off + ihl]) == 0xFFFF
    elif et == 0x86DD:
        p["v"] = 6
        plen = struct.unpack_from("!H", fr, off + 4)[0]
        nh = fr[off + 6]
        p["src"], p["dst"] = fr[off + 8:off + 24], fr[off + 24:off + 40]
        l4 = off + 40
        while nh in (0, 43, 60):
            nh, hl = fr[l4], (fr[l4 + 1] + 1) * 8
            l4 += hl
        proto = nh
        p["l3len_ok"] = plen == len(fr) - off - 40
        p["iphcsum_ok"] = True
    else:
        raise ValueError(f"ethertype {et:#x}")
    p["proto"], p["l4"] = proto, l4
    if proto == 6:
        doff = (fr[l4 + 12] >> 4) * 4
        p["seq"] = struct.unpack_from("!I", fr, l4 + 4)[0]
        p["flags"] = fr[l4 + 13]
        p["l4h"] = doff
        p["csumoff"] = 16
    elif proto == 17:
        p["l4h"] = 8
        p["udplen"] = struct.unpack_from("!H", fr, l4 + 4)[0]
        p["csumoff"] = 6
    else:
        raise ValueError(f"proto {proto}")
    p["check"] = struct.unpack_from("!H", fr, l4 + p["csumoff"])[0]
    p["pay"] = l4 + p["l4h"]
    p["l4len"] = len(fr) - l4
    return p


def masked_headers(fr, p):
    """Header bytes with the GSO-rewritten fields zeroed."""
    h = bytearray(fr[:p["pay"]])
    o = p["l3"]
    if p["v"] == 4:
        h[o + 2:o + 6] = b"\0\0\0\0"  # total length, ID
        h[o + 10:o + 12] = b"\0\0"   # header checksum
    else:
        h[o + 4:o + 6] = b"\0\0"
    l4 = p["l4"]
    if p["proto"] == 6:
        h[l4 + 4:l4 + 8] = b"\0\0\0\0"
        h[l4 + 13] = 0
        h[l4 + 16:l4 + 18] = b"\0\0"
    else:
        h[l4 + 4:l4 + 8] = b"\0\0\0\0"
    return bytes(h)


def check_case(c, verbose):
    errs = []
    name = f"{c['name']}/{c['mode']}"
    if "refused" in c:
        return [], f"{name}: refused by kernel ({c['refused']['error']})"
    full = c["mode"] == "full"
    fin = bytes.fromhex(c["input"]["frame"])
    vin = c["input"]["vnet"]
    pi = parse(fin)
    mss = vin["gsoSize"]
    if vin["csumStart"] != pi["l4"] or vin["hdrLen"] != pi["pay"]:
        errs.append("input vnet csumStart/hdrLen disagree with frame")
    if pi["check"] != pseudo(pi["src"], pi["dst"], pi["proto"], pi["l4len"]):
        errs.append("input checksum field is not the pseudo-header sum")
    if not (pi["iphcsum_ok"] and pi["l3len_ok"]):
        errs.append("input L3 header inconsistent")
    payload_in = fin[pi["pay"]:]
    segs = c["segments"]
    n = len(segs)
    if n != -(-len(payload_in) // mss):
        errs.append(f"segment count {n} != ceil({len(payload_in)}/{mss})")
    out = b""
    ids, flags = [], []
    hin = masked_headers(fin, pi)
    for i, s in enumerate(segs):
        fr = bytes.fromhex(s["frame"])
        v = s["vnet"]
        p = parse(fr)
        tag = f"seg{i}"
        if len(fr) - 14 - 4 * len(p["tags"]) > 1500:
            errs.append(f"{tag}: above MTU")
        if not p["iphcsum_ok"]:
            errs.append(f"{tag}: bad IPv4 header checksum")
        if not p["l3len_ok"]:
            errs.append(f"{tag}: bad IP length")
        if p["proto"] == 17 and p["udplen"] != p["l4len"]:
            errs.append(f"{tag}: bad UDP length")
        plen = len(fr) - p["pay"]
        if plen != (mss if i < n - 1 else len(payload_in) - mss * (n - 1)):
            errs.append(f"{tag}: payload length {plen}")
        ps = pseudo(p["src"], p["dst"], p["proto"], p["l4len"])
        if full:
            if v["flags"] & 1:
                errs.append(f"{tag}: NEEDS_CSUM in full mode")
            if csum16(fr[p["l4"]:], ps) != 0xFFFF:
                errs.append(f"{tag}: L4 checksum does not verify")
            if p["proto"] == 17 and p["check"] == 0:
                errs.append(f"{tag}: UDP checksum 0 transmitted")
        else:
            if not (v["flags"] & 1) or v["csumStart"] != p["l4"] or v["csumOffset"] != p["csumoff"]:
                errs.append(f"{tag}: vnet {v} does not describe a partial checksum at L4")
            if p["check"] != ps:
                errs.append(f"{tag}: check field {p['check']:#06x} != pseudo sum {ps:#06x}")
            # completing the partial checksum must give a valid segment
            body = bytearray(fr[p["l4"]:])
            body[p["csumoff"]:p["csumoff"] + 2] = b"\0\0"
            cs = (~csum16(bytes(body), p["check"])) & 0xFFFF
            body[p["csumoff"]:p["csumoff"] + 2] = cs.to_bytes(2, "big")
            if csum16(bytes(body), ps) != 0xFFFF:
                errs.append(f"{tag}: completed checksum invalid")
        if masked_headers(fr, p) != hin:
            errs.append(f"{tag}: header bytes differ from input beyond the GSO-rewritten fields")
        if p["v"] == 4:
            ids.append(p["id"])
            if p["id"] != (pi["id"] + i) & 0xFFFF:
                errs.append(f"{tag}: IPv4 ID {p['id']:#x} != input+{i}")
        if p["proto"] == 6:
            flags.append(p["flags"])
            if p["seq"] != (pi["seq"] + i * mss) & 0xFFFFFFFF:
                errs.append(f"{tag}: seq {p['seq']:#x}")
            want = pi["flags"]
            if i > 0:
                want &= ~0x80
            if i < n - 1:
                want &= ~0x09
            if p["flags"] != want:
                errs.append(f"{tag}: flags {p['flags']:#04x} expected {want:#04x}")
        out += fr[p["pay"]:]
    if out != payload_in:
        errs.append("concatenated payload differs from input")
    info = f"{name}: {n} segs"
    if ids:
        info += f" ids={','.join(f'{x:#06x}' for x in ids[:4])}{'...' if len(ids) > 4 else ''}"
    if flags:
        info += f" tcpflags={','.join(f'{x:#04x}' for x in flags[:3])}{'...' if len(flags) > 3 else ''}"
    return errs, info


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    path = args[0] if args else "test/vectors/kernel-gso.json"
    doc = json.load(open(path))
    bad = 0
    for c in doc["cases"]:
        errs, info = check_case(c, verbose)
        print(("FAIL " if errs else "ok   ") + info)
        for e in errs:
            print("     - " + e)
        bad += bool(errs)
    print(f"{len(doc['cases']) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
