#!/usr/bin/python3
"""Generate golden TSO/USO vectors from the running Linux kernel's own GSO.

Run as root with Debian's interpreter:

    sudo /usr/bin/python3 scripts/kernel-gso-vectors.py [--out PATH] [--prefix P]

Two throw-away network namespaces joined by a veth pair are created (no
addresses, IPv6 disabled, loopback left down).  For every case a GSO
super-frame is built here, prefixed with a struct virtio_net_hdr and
injected with an AF_PACKET socket (PACKET_VNET_HDR) on the sender veth,
whose TSO/USO features are off, so the kernel segments it in software
(validate_xmit_skb -> skb_gso_segment).  The segments are captured on the
receiving veth with PACKET_VNET_HDR + PACKET_AUXDATA, any VLAN tag that
the receive path moved out of band is put back, and everything is written
as JSON (see scripts/kernel-gso-vectors.md).

Only the Python standard library is used.  The namespaces are removed on
every exit path (finally, atexit, SIGINT/SIGTERM/SIGHUP).
"""

import argparse
import atexit
import datetime
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

# ----------------------------------------------------------------------------
# constants (values from the Linux uapi headers)

SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8

TP_STATUS_CSUMNOTREADY = 0x08
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TP_STATUS_CSUM_VALID = 0x80

VNET_F_NEEDS_CSUM = 1
VNET_F_DATA_VALID = 2
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80

VNET_HDR_FMT = "<BBHHHH"  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = 10
AUXDATA_FMT = "=IIIHHHH"  # tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
AUXDATA_LEN = struct.calcsize(AUXDATA_FMT)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DSTOPTS = 60

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG, TCP_ECE, TCP_CWR = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)

# Documentation/benchmark address space only (RFC 2544 / RFC 3849).  These
# addresses are only ever written into injected frames, never configured.
IP4_SRC = bytes([198, 18, 0, 1])
IP4_DST = bytes([198, 19, 0, 2])
IP6_SRC = bytes.fromhex("20010db8000000000000000000000001")
IP6_DST = bytes.fromhex("20010db8000000000000000000000002")
# locally administered, unicast
MAC_SND = bytes.fromhex("027673670001")
MAC_RCV = bytes.fromhex("027673670002")

MTU = 1500
CAPTURE_TIMEOUT = 2.0
EXTRA_WAIT = 0.15

PY = "/usr/bin/python3"


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------
# checksum helpers (RFC 1071)

def ones_sum(data, start=0):
    """One's-complement 16-bit sum of data (big-endian words), folded."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    s = start
    for (w,) in struct.iter_unpack("!H", data):
        s += w
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def inet_csum(data):
    return (~ones_sum(data)) & 0xFFFF


def pseudo_sum(src, dst, proto, l4len):
    """Folded, non-complemented one's-complement sum of the pseudo-header."""
    if len(src) == 4:
        ph = src + dst + struct.pack("!BBH", 0, proto, l4len)
    else:
        ph = src + dst + struct.pack("!IxxxB", l4len, proto)
    return ones_sum(ph)


# ----------------------------------------------------------------------------
# frame builders

def payload_bytes(n, seed):
    """Deterministic, non-repeating-looking payload (xorshift32 stream)."""
    x = (0x9E3779B9 ^ (seed * 0x85EBCA6B)) & 0xFFFFFFFF or 1
    out = bytearray(n)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return out


def tcp_options(kind):
    if kind is None:
        return b""
    if kind == "ts":  # NOP NOP Timestamps
        return b"\x01\x01" + struct.pack("!BBII", 8, 10, 0x01020304, 0xA0B0C0D0)
    if kind == "mss-sack-ts-ws":  # 20 bytes
        return (struct.pack("!BBH", 2, 4, 1440)      # MSS
                + b"\x04\x02"                         # SACK permitted
                + struct.pack("!BBII", 8, 10, 0x11223344, 0x55667788)  # TS
                + b"\x01"                             # NOP
                + b"\x03\x03\x07")                    # window scale 7
    if kind == "sack":  # NOP NOP SACK with one block
        return b"\x01\x01" + struct.pack("!BBII", 5, 10, 0x10000000, 0x10000400)
    raise ValueError(kind)


def build_case(c):
    """Return (vnet dict, frame bytes, meta) for case spec c."""
    l4 = c["l4"]
    v6 = c["ip"] == 6
    pay = payload_bytes(c["payload"], c["seed"])
    # --- L2
    eth = MAC_RCV + MAC_SND
    tags = b""
    if c.get("vlan"):
        for tpid, tci in c["vlan"]:
            tags += struct.pack("!HH", tpid, tci)
    l3type = ETH_P_IPV6 if v6 else ETH_P_IP
    l2 = eth + tags + struct.pack("!H", l3type)
    # --- L4 header (checksum filled below)
    if l4 == "tcp":
        opts = tcp_options(c.get("tcpopts"))
        assert len(opts) % 4 == 0
        doff = (20 + len(opts)) // 4
        flags = c.get("flags", TCP_ACK | TCP_PSH)
        l4hdr = bytearray(struct.pack("!HHIIBBHHH", c["sport"], c["dport"], c.get("seq", 0x12345678),
                                      c.get("ack", 0x9ABCDEF0), doff << 4, flags,
                                      c.get("window", 0xFFFF), 0, c.get("urgp", 0)) + opts)
        proto = IPPROTO_TCP
        csum_off = 16
    else:
        l4hdr = bytearray(struct.pack("!HHHH", c["sport"], c["dport"], 8 + len(pay), 0))
        proto = IPPROTO_UDP
        csum_off = 6
    l4len = len(l4hdr) + len(pay)
    # --- L3
    if not v6:
        ipopts = c.get("ipopts", b"")
        assert len(ipopts) % 4 == 0
        ihl = (20 + len(ipopts)) // 4
        frag = 0x4000 if c.get("df", True) else 0
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, c.get("tos", 0), 20 + len(ipopts) + l4len,
                                   c.get("ipid", 0x1234), frag, 64, proto, 0, c.get("src4", IP4_SRC), IP4_DST) + ipopts)
        struct.pack_into("!H", ip, 10, inet_csum(ip))
        src, dst = c.get("src4", IP4_SRC), IP4_DST
    else:
        ext = b""
        nh = proto
        if c.get("dstopts"):
            # Destination Options header, 8 bytes: next header, hdr ext len 0, PadN(4)
            ext = struct.pack("!BB", proto, 0) + b"\x01\x04\x00\x00\x00\x00"
            nh = IPPROTO_DSTOPTS
        ip = bytearray(struct.pack("!IHBB16s16s", (6 << 28) | (c.get("tclass", 0) << 20) | c.get("flow", 0x12345),
                                   len(ext) + l4len, nh, 64, IP6_SRC, IP6_DST) + ext)
        src, dst = IP6_SRC, IP6_DST
    # what Linux stores for CHECKSUM_PARTIAL: folded pseudo-header sum, not complemented
    struct.pack_into("!H", l4hdr, csum_off, pseudo_sum(src, dst, proto, l4len))
    frame = bytes(l2 + ip + l4hdr + pay)
    l4off = len(l2) + len(ip)
    gso = GSO_TCPV6 if (l4 == "tcp" and v6) else GSO_TCPV4 if l4 == "tcp" else GSO_UDP_L4
    if c.get("gsoEcn"):
        gso |= GSO_ECN
    vnet = {"flags": VNET_F_NEEDS_CSUM, "gsoType": gso, "hdrLen": l4off + len(l4hdr),
            "gsoSize": c["mss"], "csumStart": l4off, "csumOffset": csum_off}
    meta = {"l4off": l4off, "l4hlen": len(l4hdr), "payload": pay, "src": src, "dst": dst, "proto": proto}
    return vnet, frame, meta


def vnet_pack(v):
    return struct.pack(VNET_HDR_FMT, v["flags"], v["gsoType"], v["hdrLen"], v["gsoSize"], v["csumStart"], v["csumOffset"])


def vnet_unpack(b):
    f, g, h, s, cs, co = struct.unpack(VNET_HDR_FMT, b[:VNET_HDR_LEN])
    return {"flags": f, "gsoType": g, "hdrLen": h, "gsoSize": s, "csumStart": cs, "csumOffset": co}


# ----------------------------------------------------------------------------
# cases

def make_cases():
    A = TCP_ACK
    cases = []

    def add(name, desc, **kw):
        kw.setdefault("l4", "tcp")
        kw.setdefault("ip", 4)
        kw["name"] = name
        kw["description"] = desc
        kw["sport"] = 40000 + len(cases)
        kw["dport"] = 5201  # sport is unique per case: the capture filter uses it
        kw["seed"] = len(cases) + 1
        cases.append(kw)

    add("tcp4-plain", "IPv4/TCP, no options, mss 1448, ACK|PSH, 6000 B", mss=1448, payload=6000)
    add("tcp4-mss1460", "IPv4/TCP, mss 1460 (segments exactly 1500 B IP)", mss=1460, payload=3 * 1460 + 100)
    add("tcp4-ts", "IPv4/TCP with NOP,NOP,Timestamps, mss 1436", mss=1436, payload=7000, tcpopts="ts")
    add("tcp4-nonmultiple", "payload = 3*mss + 1 (1-byte last segment)", mss=1448, payload=3 * 1448 + 1)
    add("tcp4-exact", "payload = 4*mss exactly", mss=1448, payload=4 * 1448)
    add("tcp4-flags-ecn", "flags CWR|ECE|URG|PSH|FIN|ACK, gso_type TCPV4|ECN, IP ECT(0)",
        mss=1448, payload=6000, flags=TCP_CWR | TCP_ECE | TCP_URG | TCP_PSH | TCP_FIN | A, urgp=0x10, tos=0x02,
        gsoEcn=True)
    add("tcp4-flags-noecn", "flags CWR|ECE|PSH|FIN|ACK, gso_type TCPV4 without ECN bit",
        mss=1448, payload=6000, flags=TCP_CWR | TCP_ECE | TCP_PSH | TCP_FIN | A)
    add("tcp4-ipopt-ra", "IPv4 with Router Alert option (IHL 6)", mss=1448, payload=5000,
        ipopts=b"\x94\x04\x00\x00")
    add("tcp4-ipopt-nop", "IPv4 with 8 bytes of options: NOP x3 + EOL + 4 x EOL pad (IHL 7)", mss=1440,
        payload=5000, ipopts=b"\x01\x01\x01\x00\x00\x00\x00\x00")
    add("tcp4-vlan", "IPv4/TCP in 802.1Q tag (PCP 3, VID 100)", mss=1448, payload=6000,
        vlan=[(ETH_P_8021Q, (3 << 13) | 100)])
    add("tcp4-qinq", "IPv4/TCP in 802.1ad S-tag VID 200 + 802.1Q C-tag VID 100", mss=1448, payload=6000,
        vlan=[(ETH_P_8021AD, (5 << 13) | 200), (ETH_P_8021Q, 100)])
    add("tcp4-mss536", "small mss 536", mss=536, payload=3000, tcpopts="ts")
    add("tcp4-ipid-wrap", "IPv4 ID 0xfffe: watch the ID wrap", mss=1448, payload=6000, ipid=0xFFFE)
    add("tcp4-nodf", "IPv4 without DF, ID 0x8000", mss=1448, payload=5000, df=False, ipid=0x8000)
    add("tcp4-seq-wrap", "TCP seq 0xfffffa00: sequence wraps past 2^32", mss=1448, payload=5000, seq=0xFFFFFA00)
    add("tcp4-sack", "TCP NOP,NOP,SACK block option, mss 1436", mss=1436, payload=4500, tcpopts="sack")
    add("tcp4-large", "60000 B payload, mss 1448 (42 segments)", mss=1448, payload=60000, tcpopts="ts")
    add("tcp4-csum-zero", "payload tuned so segment 1's TCP checksum is 0x0000", mss=1448, payload=4000,
        forceZero=1)
    add("tcp6-plain", "IPv6/TCP, mss 1440", ip=6, mss=1440, payload=7000)
    add("tcp6-opts", "IPv6/TCP with MSS,SACK-perm,TS,NOP,WS options (20 B), mss 1420", ip=6, mss=1420,
        payload=7000, tcpopts="mss-sack-ts-ws")
    add("tcp6-dstopts", "IPv6 with 8-byte Destination Options ext header, mss 1400", ip=6, mss=1400,
        payload=5000)
    add("tcp6-vlan", "IPv6/TCP in 802.1Q tag VID 100", ip=6, mss=1440, payload=6000,
        vlan=[(ETH_P_8021Q, 100)])
    add("tcp6-flags", "IPv6 flags CWR|ECE|PSH|FIN|ACK, gso_type TCPV6|ECN, TC ECT(0)", ip=6, mss=1440,
        payload=5000, flags=TCP_CWR | TCP_ECE | TCP_PSH | TCP_FIN | A, tclass=0x02, gsoEcn=True)
    add("tcp6-large", "IPv6, 15000 B payload", ip=6, mss=1440, payload=15000)
    add("udp4-uso", "IPv4/UDP L4 (USO) gso_size 1400, payload 2*1400+1", l4="udp", mss=1400, payload=2 * 1400 + 1)
    add("udp4-uso-big", "IPv4/UDP L4 gso_size 1400, payload 6500", l4="udp", mss=1400, payload=6500)
    add("udp4-uso-exact", "IPv4/UDP L4 gso_size 1472, payload 3*1472", l4="udp", mss=1472, payload=3 * 1472)
    add("udp4-csum-zero", "payload tuned so segment 1's UDP checksum computes to 0 (sent as 0xffff)", l4="udp",
        mss=1400, payload=4000, forceZero=1)
    add("udp4-ipid-wrap", "USO with IPv4 ID 0xffff", l4="udp", mss=1400, payload=4000, ipid=0xFFFF)
    add("udp6-uso", "IPv6/UDP L4 gso_size 1400, payload 6001", l4="udp", ip=6, mss=1400, payload=6001)
    add("udp6-vlan", "IPv6/UDP L4 in 802.1Q tag VID 100", l4="udp", ip=6, mss=1400, payload=3000,
        vlan=[(ETH_P_8021Q, 100)])
    add("tcp4-pseudo-ffff", "source address picked so full-size segments' pseudo-header sum is 0 mod 0xffff",
        mss=1448, payload=4000, src4=pseudo_zero_src(IPPROTO_TCP, 20 + 1448))
    add("udp4-pseudo-ffff", "as tcp4-pseudo-ffff for USO", l4="udp", mss=1400, payload=3000,
        src4=pseudo_zero_src(IPPROTO_UDP, 8 + 1400))
    return cases


def pseudo_zero_src(proto, l4len):
    """An address in 198.18.0.0/15 whose IPv4 pseudo-header sum (with IP4_DST,
    proto, l4len) is congruent to 0 mod 0xffff, i.e. folds to 0xffff."""
    for hi in (0xC612, 0xC613):
        for lo in range(1, 0xFFFF):
            src = struct.pack("!HH", hi, lo)
            if pseudo_sum(src, IP4_DST, proto, l4len) == 0xFFFF:
                return src
    raise AssertionError("no address found")


def apply_force_zero(c, vnet, frame, meta):
    """Patch two payload bytes of segment k=c['forceZero'] (at its start) so
    that the segment's complete L4 checksum evaluates to 0x0000. Returns new
    frame (super-frame L4 checksum field is not payload-dependent in the
    partial form, so it stays valid)."""
    k = c["forceZero"]
    mss = c["mss"]
    l4off, l4hlen = meta["l4off"], meta["l4hlen"]
    pay = bytearray(meta["payload"])
    seg = pay[k * mss:(k + 1) * mss]
    hdr = bytearray(frame[l4off:l4off + l4hlen])
    seglen = l4hlen + len(seg)
    # predicted segment header: differs from the super header in checksum,
    # seq (TCP) / length (UDP), flags (TCP).  Build it as the kernel would.
    if meta["proto"] == IPPROTO_TCP:
        seq = (struct.unpack_from("!I", hdr, 4)[0] + k * mss) & 0xFFFFFFFF
        struct.pack_into("!I", hdr, 4, seq)
        hdr[13] &= ~(TCP_FIN | TCP_PSH) & 0xFF
        if k > 0:
            hdr[13] &= ~TCP_CWR & 0xFF
        csum_off = 16
    else:
        struct.pack_into("!H", hdr, 4, seglen)
        csum_off = 6
    struct.pack_into("!H", hdr, csum_off, 0)
    # choose word w (first 2 bytes of segment payload) such that total sum == 0xffff
    seg[0:2] = b"\x00\x00"
    s = ones_sum(bytes(hdr) + bytes(seg), pseudo_sum(meta["src"], meta["dst"], meta["proto"], seglen))
    w = (0xFFFF - s) % 0xFFFF  # s + w == 0xffff (one's complement)
    if w == 0:
        w = 0xFFFF if s == 0 else 0
    seg[0:2] = struct.pack("!H", w)
    assert ones_sum(bytes(hdr) + bytes(seg), pseudo_sum(meta["src"], meta["dst"], meta["proto"], seglen)) == 0xFFFF
    pay[k * mss:(k + 1) * mss] = seg
    poff = l4off + l4hlen
    newframe = frame[:poff] + bytes(pay)
    meta["payload"] = pay
    return newframe


# ----------------------------------------------------------------------------
# environment: namespaces, veth, ethtool

class Env:
    def __init__(self, prefix):
        self.prefix = prefix
        self.ns_snd = prefix + "-a"
        self.ns_rcv = prefix + "-b"
        self.dev_snd = prefix + "a"
        self.dev_rcv = prefix + "b"
        for n in (self.dev_snd, self.dev_rcv):
            if len(n) > 15:
                raise SystemExit(f"interface name {n!r} longer than 15 characters; use a shorter --prefix")
        self.created = []
        self.cleaned = False

    def run(self, *args, ns=None, check=True, capture=True):
        cmd = list(args)
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        r = subprocess.run(cmd, stdout=subprocess.PIPE if capture else None,
                           stderr=subprocess.PIPE if capture else None, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
        return r

    def setup(self):
        existing = self.run("ip", "netns", "list").stdout
        for ns in (self.ns_snd, self.ns_rcv):
            if any(line.split()[0] == ns for line in existing.splitlines() if line.strip()):
                raise SystemExit(f"namespace {ns} already exists; refusing to touch it")
        for ns in (self.ns_snd, self.ns_rcv):
            self.run("ip", "netns", "add", ns)
            self.created.append(ns)
            # IPv6 off before any device appears: no DAD/RS/MLD ever leaves
            self.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                     "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        # create both veth ends directly inside their namespaces
        self.run("ip", "link", "add", "name", self.dev_snd, "netns", self.ns_snd, "address", mac_str(MAC_SND),
                 "mtu", str(MTU), "type", "veth", "peer", "name", self.dev_rcv, "netns", self.ns_rcv,
                 "address", mac_str(MAC_RCV), "mtu", str(MTU))
        for ns, dev in ((self.ns_snd, self.dev_snd), (self.ns_rcv, self.dev_rcv)):
            self.run("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            v = self.run("cat", f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", ns=ns).stdout.strip()
            if v != "1":
                raise RuntimeError(f"could not disable IPv6 on {dev}")
        # receiver: no GRO/LRO so nothing is merged again before the tap
        self.ethtool_set(self.ns_rcv, self.dev_rcv, {"generic-receive-offload": "off"}, check=False)
        self.ethtool_set(self.ns_rcv, self.dev_rcv, {"large-receive-offload": "off"}, check=False)
        self.ethtool_set(self.ns_rcv, self.dev_rcv, {"rx-gro-list": "off"}, check=False)
        self.run("ip", "link", "set", self.dev_snd, "up", ns=self.ns_snd)
        self.run("ip", "link", "set", self.dev_rcv, "up", ns=self.ns_rcv)
        for ns, dev in ((self.ns_snd, self.dev_snd), (self.ns_rcv, self.dev_rcv)):
            out = self.run("ip", "-o", "addr", "show", "dev", dev, ns=ns).stdout
            if "inet" in out:
                raise RuntimeError(f"unexpected address on {dev}: {out}")

    def ethtool_get(self, ns, dev):
        out = self.run("ethtool", "-k", dev, ns=ns).stdout
        feats = {}
        for line in out.splitlines()[1:]:
            if ":" not in line:
                continue
            k, v = line.split(":", 1)
            v = v.strip()
            feats[k.strip()] = v.split()[0] if v else v
        return feats

    def ethtool_set(self, ns, dev, settings, check=True):
        args = []
        for k, v in settings.items():
            args += [k, v]
        return self.run("ethtool", "-K", dev, *args, ns=ns, check=check)

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.created = []


def mac_str(b):
    return ":".join(f"{x:02x}" for x in b)


def ns_socket(ns, dev, proto, rcvbuf=0):
    """Create an AF_PACKET socket inside namespace ns (via a helper child run
    with 'ip netns exec'), bound to dev, and receive its descriptor here over
    SCM_RIGHTS.  The socket stays attached to the namespace it was made in."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        p = subprocess.Popen(["ip", "netns", "exec", ns, PY, os.path.abspath(__file__), "--role", "sock",
                              "--dev", dev, "--proto", str(proto), "--fd", str(child.fileno()),
                              "--rcvbuf", str(rcvbuf)],
                             pass_fds=(child.fileno(),))
        child.close()
        parent.settimeout(10)
        msg, fds, _, _ = socket.recv_fds(parent, 64, 1)
        p.wait(timeout=10)
        if not fds:
            raise RuntimeError(f"no socket received from helper in {ns}: {msg!r}")
        return socket.socket(fileno=fds[0])
    finally:
        parent.close()


def role_sock(args):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(args.proto))
    if args.rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, 33, args.rcvbuf)  # SO_RCVBUFFORCE
    s.bind((args.dev, args.proto))
    ch = socket.socket(fileno=args.fd)
    socket.send_fds(ch, [b"ok"], [s.fileno()])
    ch.close()
    return 0


# ----------------------------------------------------------------------------
# capture

def recv_frame(rx):
    """Receive one frame; return dict or None if not for us (outgoing)."""
    data, anc, flags, addr = rx.recvmsg(70000, socket.CMSG_SPACE(AUXDATA_LEN))
    if flags & socket.MSG_TRUNC:
        raise RuntimeError("captured frame truncated")
    pkttype = addr[2]
    aux = None
    for lvl, typ, cd in anc:
        if lvl == SOL_PACKET and typ == PACKET_AUXDATA:
            aux = struct.unpack(AUXDATA_FMT, cd[:AUXDATA_LEN])
    if aux is None:
        raise RuntimeError("no PACKET_AUXDATA control message")
    vnet = vnet_unpack(data[:VNET_HDR_LEN])
    raw = bytes(data[VNET_HDR_LEN:])
    status, tp_len, tp_snap, tp_mac, tp_net, tci, tpid = aux
    rx_info = {"tpStatus": status, "csumStartRaw": vnet["csumStart"], "rawLen": len(raw)}
    frame = raw
    if status & TP_STATUS_VLAN_VALID:
        if not (status & TP_STATUS_VLAN_TPID_VALID):
            tpid = ETH_P_8021Q
        frame = raw[:12] + struct.pack("!HH", tpid, tci) + raw[12:]
        rx_info["strippedVlan"] = {"tpid": tpid, "tci": tci}
        if vnet["flags"] & VNET_F_NEEDS_CSUM:
            vnet["csumStart"] += 4
    return {"pkttype": pkttype, "vnet": vnet, "frame": frame, "rx": rx_info}


def drain(rx):
    n = 0
    while select.select([rx], [], [], 0)[0]:
        recv_frame(rx)
        n += 1
    return n


def is_ours(frame, c):
    if frame[:12] != MAC_RCV + MAC_SND:
        return False
    off = 12
    while struct.unpack_from("!H", frame, off)[0] in (ETH_P_8021Q, ETH_P_8021AD):
        off += 4
    et = struct.unpack_from("!H", frame, off)[0]
    off += 2
    if c["ip"] == 4:
        if et != ETH_P_IP or frame[off + 12:off + 20] != c.get("src4", IP4_SRC) + IP4_DST:
            return False
        l4 = off + (frame[off] & 0xF) * 4
    else:
        if et != ETH_P_IPV6 or frame[off + 8:off + 40] != IP6_SRC + IP6_DST:
            return False
        l4 = off + 40 + (8 if c.get("dstopts") else 0)
    return struct.unpack_from("!HH", frame, l4) == (c["sport"], c["dport"])


def run_case(tx, rx, c, mode):
    vnet, frame, meta = build_case(c)
    if c.get("forceZero") is not None:
        frame = apply_force_zero(c, vnet, frame, meta)
    npay = len(meta["payload"])
    expected = -(-npay // c["mss"])
    ignored = drain(rx)
    result = {"name": c["name"], "mode": mode, "description": c["description"],
              "input": {"vnet": vnet, "frame": frame.hex()}, "segments": []}
    try:
        sent = tx.send(vnet_pack(vnet) + frame)
    except OSError as e:
        result["refused"] = {"errno": e.errno, "error": os.strerror(e.errno)}
        return result, ignored
    if sent != VNET_HDR_LEN + len(frame):
        raise RuntimeError(f"short send {sent}")
    segs = []
    deadline = time.monotonic() + CAPTURE_TIMEOUT
    extra_deadline = None
    while True:
        now = time.monotonic()
        end = extra_deadline if extra_deadline is not None else deadline
        if now >= end:
            break
        r, _, _ = select.select([rx], [], [], end - now)
        if not r:
            continue
        f = recv_frame(rx)
        if f["pkttype"] == PACKET_OUTGOING or not is_ours(f["frame"], c):
            ignored += 1
            continue
        segs.append(f)
        if len(segs) >= expected and extra_deadline is None:
            extra_deadline = time.monotonic() + EXTRA_WAIT
    for f in segs:
        result["segments"].append({"vnet": f["vnet"], "frame": f["frame"].hex(), "rx": f["rx"]})
    result["expectedSegments"] = expected
    if any(len(f["frame"]) >= len(frame) and len(frame) > 1518 for f in segs):
        raise RuntimeError(f"{c['name']}/{mode}: kernel passed the super-frame through unsegmented")
    if len(segs) != expected:
        raise RuntimeError(f"{c['name']}/{mode}: expected {expected} segments, captured {len(segs)}")
    return result, ignored


# ----------------------------------------------------------------------------

FEATURES_OF_INTEREST = [
    "rx-checksumming", "tx-checksumming", "tx-checksum-ip-generic", "scatter-gather",
    "tcp-segmentation-offload", "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation", "tx-tcp-accecn-segmentation",
    "generic-segmentation-offload", "generic-receive-offload", "tx-udp-segmentation",
    "tx-gso-partial", "tx-vlan-offload", "rx-vlan-offload", "tx-vlan-stag-hw-insert",
    "rx-vlan-stag-hw-parse", "large-receive-offload", "rx-gro-list",
]


def configure_mode(env, mode):
    dev, ns = env.dev_snd, env.ns_snd
    base = {"tso": "off", "gso": "on"}
    env.ethtool_set(ns, dev, base)
    env.ethtool_set(ns, dev, {"tx-udp-segmentation": "off"})
    env.ethtool_set(ns, dev, {"tx": "off" if mode == "full" else "on"})
    # 'tx on' must not bring TSO back; be explicit again
    env.ethtool_set(ns, dev, base)
    env.ethtool_set(ns, dev, {"tx-udp-segmentation": "off"})
    feats = env.ethtool_get(ns, dev)
    for k in ("tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-udp-segmentation"):
        if feats.get(k, "off") != "off":
            raise RuntimeError(f"{k} still {feats.get(k)} on {dev}")
    want_csum = "off" if mode == "full" else "on"
    if feats.get("tx-checksumming") != want_csum:
        raise RuntimeError(f"tx-checksumming is {feats.get('tx-checksumming')}, wanted {want_csum}")
    rfeats = env.ethtool_get(env.ns_rcv, env.dev_rcv)
    return {
        "commands": [f"ethtool -K <sender> tso off gso on", "ethtool -K <sender> tx-udp-segmentation off",
                     f"ethtool -K <sender> tx {'off' if mode == 'full' else 'on'}",
                     "ethtool -K <receiver> gro off lro off rx-gro-list off"],
        "sender": {k: feats[k] for k in FEATURES_OF_INTEREST if k in feats},
        "receiver": {k: rfeats[k] for k in FEATURES_OF_INTEREST if k in rfeats},
    }


def ensure_tools():
    for tool in ("ip", "sysctl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (install iproute2 / procps)")
    if not shutil.which("ethtool"):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("ethtool missing: apt-get install -y ethtool")
            subprocess.run(["apt-get", "update", "-qq"], check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "ethtool"], check=False)
        if not shutil.which("ethtool"):
            raise SystemExit("ethtool not found: apt-get install -y ethtool")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output JSON (default test/vectors/kernel-gso.json)")
    ap.add_argument("--prefix", default=f"vsg{os.getpid()}", help="namespace/interface name prefix")
    ap.add_argument("--only", default=None, help="comma-separated case names (debugging)")
    ap.add_argument("--modes", default="full,partial")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dev", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--proto", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--rcvbuf", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "sock":
        return role_sock(args)

    if os.geteuid() != 0:
        raise SystemExit("must run as root")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = args.out or os.path.join(repo, "test", "vectors", "kernel-gso.json")
    ensure_tools()

    env = Env(args.prefix)
    atexit.register(env.cleanup)

    def on_signal(signum, frame):
        env.cleanup()
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    cases = make_cases()
    if args.only:
        want = set(args.only.split(","))
        cases = [c for c in cases if c["name"] in want]
    modes = args.modes.split(",")
    results = []
    features = {}
    total_ignored = 0
    try:
        env.setup()
        rx = ns_socket(env.ns_rcv, env.dev_rcv, ETH_P_ALL, rcvbuf=8 << 20)
        rx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        rx.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        tx = ns_socket(env.ns_snd, env.dev_snd, 0)
        tx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        for mode in modes:
            features[mode] = configure_mode(env, mode)
            time.sleep(0.05)
            total_ignored += drain(rx)
            for c in cases:
                res, ign = run_case(tx, rx, c, mode)
                total_ignored += ign
                results.append(res)
                if "refused" in res:
                    log(f"{c['name']:<18} {mode:<7} REFUSED by kernel: {res['refused']['error']}")
                    continue
                segs = res["segments"]
                lens = [len(s["frame"]) // 2 for s in segs]
                fl = {s["vnet"]["flags"] for s in segs}
                vl = " vlan-stripped" if any("strippedVlan" in s["rx"] for s in segs) else ""
                log(f"{c['name']:<18} {mode:<7} in={len(res['input']['frame']) // 2:>5}B mss={c['mss']:<4} "
                    f"segs={len(segs):>2} lens={min(lens)}..{max(lens)} rx-vnet-flags={sorted(fl)}{vl}")
        rx.close()
        tx.close()
    finally:
        env.cleanup()
    left = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True).stdout
    if env.ns_snd in left or env.ns_rcv in left:
        raise SystemExit("namespaces still present after cleanup!")

    doc = {
        "generator": "scripts/kernel-gso-vectors.py",
        "kernel": os.uname().release,
        "generatedAt": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "description": ("Super-frames with a virtio_net_hdr injected through AF_PACKET+PACKET_VNET_HDR on a "
                        "veth with TSO/USO off, segmented by the kernel's software GSO, captured on the peer "
                        "veth (PACKET_VNET_HDR+PACKET_AUXDATA; out-of-band VLAN tags re-inserted, csumStart "
                        "adjusted). Mode 'full': sender tx-checksumming off, segments carry complete "
                        "checksums. Mode 'partial': tx-checksumming on, segments stay CHECKSUM_PARTIAL."),
        "ignoredFrames": total_ignored,
        "features": features,
        "cases": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        # one case per line keeps the file diffable without indenting every field
        cases = doc.pop("cases")
        head = json.dumps(doc, indent=1)
        f.write(head[:-2] + ',\n "cases": [\n')
        f.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in cases))
        f.write("\n ]\n}\n")
        doc["cases"] = cases
    os.replace(tmp, out)
    log(f"wrote {out} ({os.path.getsize(out)} bytes, {len(results)} cases, {total_ignored} unrelated frames ignored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
