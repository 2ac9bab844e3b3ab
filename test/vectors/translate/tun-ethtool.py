#!/usr/bin/python3
"""What a guest sees in `ethtool -k` after TUNSETOFFLOAD, measured on this kernel.

Run as root with Debian's interpreter (standard library only):

    /usr/bin/python3 test/vectors/translate/tun-ethtool.py --out PATH [--text-dir DIR] [--prefix P]
        Every combination of the TUN_F_* bits 0x000..0x1ff, plus each higher bit
        on its own (with CSUM|TSO4), each applied to a fresh TAP.  Writes the
        vectors JSON to PATH; with --text-dir also the raw `ethtool -k` text of
        a TAP (offloads off and on) and of a veth (as created, and with
        `ethtool -K tx off`), for the parser tests.

    /usr/bin/python3 test/vectors/translate/tun-ethtool.py --flags 0x0,0x7 [--prefix P]
        The same measurement for the given flag values only; JSON on stdout
        (used by test/e2e/translate-tun.test.ts).

A TAP is opened on /dev/net/tun with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR (as the
switch opens a guest's port), TUNSETOFFLOAD is issued with the flags as the
ioctl argument itself (by value, not a pointer), and `ethtool -k` is read.
The TAP disappears when its fd is closed; every fd is closed in a `finally`,
and the script checks that no link with the run's prefix is left.  The veth
pair (text capture only) is deleted on every exit path (finally, atexit,
SIGINT/SIGTERM/SIGHUP).
"""

import argparse
import atexit
import datetime
import errno
import fcntl
import json
import os
import platform
import signal
import struct
import subprocess
import sys

# Values from include/uapi/linux/if_tun.h (Linux 6.18).
TUNSETIFF = 0x400454CA       # _IOW('T', 202, int)
TUNSETOFFLOAD = 0x400454D0   # _IOW('T', 208, unsigned int)
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

FLAG_NAMES = {
    "TUN_F_CSUM": 0x01,
    "TUN_F_TSO4": 0x02,
    "TUN_F_TSO6": 0x04,
    "TUN_F_TSO_ECN": 0x08,
    "TUN_F_UFO": 0x10,
    "TUN_F_USO4": 0x20,
    "TUN_F_USO6": 0x40,
    "TUN_F_UDP_TUNNEL_GSO": 0x80,
    "TUN_F_UDP_TUNNEL_GSO_CSUM": 0x100,
}

ETHTOOL = "ethtool"


def parse_ethtool_k(text):
    """Feature name -> value text as printed ('on', 'off [fixed]', ...), in order."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("Features for"):
            continue
        name, sep, value = line.strip().partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def ethtool_k(dev):
    r = subprocess.run([ETHTOOL, "-k", dev], capture_output=True, text=True, check=True)
    return r.stdout


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except BaseException:
        os.close(fd)
        raise
    return fd


def measure(name, flags):
    """Apply flags on a fresh TAP; return (None, features, text) or (errno name, None, None)."""
    fd = open_tap(name)
    try:
        try:
            # the argument is a C int: pass bit 31 as a negative number
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags - (1 << 32) if flags >= 1 << 31 else flags)
        except OSError as e:
            return errno.errorcode.get(e.errno, str(e.errno)), None, None
        text = ethtool_k(name)
        return None, parse_ethtool_k(text), text
    finally:
        os.close(fd)


def links_with_prefix(prefix):
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = []
    for line in r.stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return [n for n in names if n.startswith(prefix)]


class Veth:
    def __init__(self, prefix):
        self.a = prefix + "va"
        self.b = prefix + "vb"
        self.made = False

    def __enter__(self):
        subprocess.run(["ip", "link", "add", self.a, "type", "veth", "peer", "name", self.b], check=True)
        self.made = True
        return self

    def cleanup(self):
        if self.made:
            subprocess.run(["ip", "link", "del", self.a], capture_output=True)
            self.made = False

    def __exit__(self, *exc):
        self.cleanup()
        return False


def run_cases(prefix, flag_values):
    cases = []
    for i, flags in enumerate(flag_values):
        err, feats, _ = measure(f"{prefix}{i}", flags)
        cases.append({"flags": flags, "error": err, "features": feats})
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--text-dir")
    ap.add_argument("--flags", help="comma-separated flag values (hex or decimal)")
    ap.add_argument("--prefix", default=f"vte{os.getpid() % 100000:x}")
    a = ap.parse_args()
    if len(a.prefix) > 10:
        sys.exit("prefix too long (interface names are at most 15 characters)")
    if os.geteuid() != 0:
        sys.exit("needs root (TUNSETIFF)")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        if a.flags is not None:
            values = [int(v, 0) for v in a.flags.split(",") if v.strip()]
            cases = run_cases(a.prefix, [0] + values)
            json.dump({"kernel": platform.release(), "baseline": cases[0]["features"],
                       "cases": cases[1:]}, sys.stdout, indent=1)
            sys.stdout.write("\n")
            return

        if not a.out:
            sys.exit("--out or --flags is required")
        values = list(range(0x200)) + [0x03 | (1 << b) for b in range(9, 32)]
        raw = run_cases(a.prefix, values)
        baseline = raw[0]["features"]
        cases = []
        for c in raw:
            entry = {"flags": f"0x{c['flags']:03x}"}
            if c["error"] is not None:
                entry["error"] = c["error"]
            else:
                if list(c["features"]) != list(baseline):
                    sys.exit(f"feature list changed with flags 0x{c['flags']:x}")
                entry["changed"] = {k: v for k, v in c["features"].items() if v != baseline[k]}
            cases.append(entry)
        doc = {
            "generator": "test/vectors/translate/tun-ethtool.py",
            "kernel": platform.release(),
            "ethtool": subprocess.run([ETHTOOL, "--version"], capture_output=True, text=True).stdout.strip(),
            "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device": "TAP, IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, a fresh device per case; TUNSETOFFLOAD(flags) by value; then ethtool -k",
            "flagBits": FLAG_NAMES,
            "baseline": {"flags": "0x000", "features": baseline},
            "note": "cases[].changed lists only the features whose ethtool -k value differs from the baseline (flags 0); error is the errno name when TUNSETOFFLOAD failed",
            "cases": cases,
        }
        with open(a.out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")

        if a.text_dir:
            os.makedirs(a.text_dir, exist_ok=True)
            for flags, fname in ((0, "ethtool-k-tap-off.txt"), (0x6F, "ethtool-k-tap-on.txt")):
                fd = open_tap(f"{a.prefix}t")
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
                    text = ethtool_k(f"{a.prefix}t")
                finally:
                    os.close(fd)
                with open(os.path.join(a.text_dir, fname), "w") as f:
                    f.write(text.replace(f"{a.prefix}t", "tap0"))
            # a veth as created, and after `ethtool -K <dev> tx off` (what a
            # user disabling checksum offload on an uplink looks like)
            with Veth(a.prefix) as v:
                atexit.register(v.cleanup)
                text = ethtool_k(v.a)
                subprocess.run([ETHTOOL, "-K", v.a, "tx", "off"], capture_output=True, check=True)
                text_off = ethtool_k(v.a)
            for fname, t in (("ethtool-k-veth.txt", text), ("ethtool-k-veth-tx-off.txt", text_off)):
                with open(os.path.join(a.text_dir, fname), "w") as f:
                    f.write(t.replace(v.a, "veth0"))
    finally:
        left = links_with_prefix(a.prefix)
        for n in left:
            subprocess.run(["ip", "link", "del", n], capture_output=True)
        if left:
            sys.exit(f"links left behind (removed): {left}")


if __name__ == "__main__":
    main()
