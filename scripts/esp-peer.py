#!/usr/bin/python3
"""An independent ESP peer for vswitch's interop tests: scapy's IPsec
(scapy.layers.ipsec) and python-cryptography's AES-GCM, nothing of vswitch.

  esp-peer.py decrypt < request.json   # verify and decrypt ESP packets vswitch produced
  esp-peer.py encrypt < request.json   # produce ESP packets (good and bad) for vswitch to decapsulate

A JSON list of requests gets a list of answers, in order.
Packets are IP packets (no Ethernet) as hex; `decrypt` also takes a pcap
(Ethernet frames) with "pcap": "/path". The SA, in both requests:

  "sa": {"spi": 4096, "mode": "transport" | "tunnel", "key": "<hex 16|32>", "salt": "<hex 4>",
         "src": "198.18.0.1", "dst": "198.18.0.2",
         "outer": {"tos": 0, "id": 0, "df": true, "ttl": 64}}   # tunnel mode, encrypt: outer header fields

decrypt request: {"sa": ..., "packets": ["<hex>", ...]} or {"sa": ..., "pcap": "file"}
  -> {"results": [{"ok": true, "spi", "seq", "iv", "padLen", "padOk", "nextHeader", "inner": "<hex>",
                   "summary": "...", "checksumsOk": true}
                  | {"ok": false, "error": "icv" | "spi" | "not-esp" | "short"}]}
  "inner" is what the peer's stack would receive: the IP packet with ESP removed
  (transport: header restored by scapy; tunnel: the inner packet).

encrypt request: {"sa": ..., "packets": [{"packet": "<hex plaintext IP packet>", "seq": 1,
                                         "iv": "<hex 8, default seq as 64 bits>", "variant": "valid"}]}
  variants: valid, tamper-icv, tamper-data, tamper-iv, tamper-seq (header seq + 1),
            truncate (ESP cut to header + IV + 4 bytes), bad-pad (ICV-valid, padding not 1,2,3,...),
            bad-nh (ICV-valid, next header 17 in tunnel mode / 59 dummy in transport mode)
  -> {"results": [{"packet": "<hex ESP IP packet>", "summary": "..."}]}
"""
import json
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.all import conf, raw, rdpcap  # noqa: F401  (conf: quiet scapy)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest, ICMPv6EchoReply
from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation
from scapy.layers.l2 import Ether

conf.verb = 0


def ip_packet(data):
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


def make_sa(s, outer_fields=None):
    key = bytes.fromhex(s['key']) + bytes.fromhex(s['salt'])
    tunnel = None
    if s['mode'] == 'tunnel':
        o = outer_fields or {}
        if ':' in s['src']:
            tunnel = IPv6(src=s['src'], dst=s['dst'], hlim=o.get('ttl', 64), tc=o.get('tos', 0), fl=0)
        else:
            tunnel = IP(src=s['src'], dst=s['dst'], ttl=o.get('ttl', 64), tos=o.get('tos', 0), id=o.get('id', 0),
                        flags='DF' if o.get('df', True) else 0)
    return SecurityAssociation(ESP, spi=s['spi'], crypt_algo='AES-GCM', crypt_key=key,
                               auth_algo='NULL', auth_key=None, tunnel_header=tunnel)


def esp_offset(pkt):
    """Offset of the ESP header in the raw IP packet, or -1."""
    if ESP not in pkt:
        return -1
    return len(raw(pkt)) - len(raw(pkt[ESP]))


def checksums_ok(inner):
    """Recompute every checksum scapy knows of the packet and compare."""
    p = ip_packet(raw(inner))
    q = p.copy()
    for layer in (IP, TCP, UDP, ICMP):
        if layer in q and hasattr(q[layer], 'chksum'):
            del q[layer].chksum
    if IPv6 in q:
        for layer in (TCP, UDP, ICMPv6EchoRequest, ICMPv6EchoReply):
            if layer in q and hasattr(q[layer], 'cksum'):
                del q[layer].cksum
            if layer in q and hasattr(q[layer], 'chksum'):
                del q[layer].chksum
    return raw(ip_packet(raw(q))) == raw(p)


def decrypt_one(s, sa, data):
    pkt = ip_packet(data)
    off = esp_offset(pkt)
    if off < 0:
        return {'ok': False, 'error': 'not-esp'}
    esp = data[off:]
    if len(esp) < 8 + 8 + 16 + 2:
        return {'ok': False, 'error': 'short'}
    spi, seq = struct.unpack('!II', esp[:8])
    if spi != s['spi']:
        return {'ok': False, 'error': 'spi'}
    try:
        inner = sa.decrypt(pkt)
    except IPSecIntegrityError:
        return {'ok': False, 'error': 'icv'}
    # The trailer, which scapy does not check: decrypt again with the bare AEAD.
    iv = esp[8:16]
    pt = AESGCM(bytes.fromhex(s['key'])).decrypt(bytes.fromhex(s['salt']) + iv, esp[16:], esp[:8])
    pad_len, nh = pt[-2], pt[-1]
    padding = pt[len(pt) - 2 - pad_len:len(pt) - 2]
    return {
        'ok': True, 'spi': spi, 'seq': seq, 'iv': iv.hex(), 'padLen': pad_len,
        'padOk': padding == bytes(range(1, pad_len + 1)), 'nextHeader': nh,
        'inner': raw(inner).hex(), 'summary': inner.summary(), 'checksumsOk': checksums_ok(inner),
    }


def decrypt(req):
    s = req['sa']
    sa = make_sa(s)
    if 'pcap' in req:
        packets = []
        for f in rdpcap(req['pcap']):
            packets.append(raw(f[Ether].payload) if Ether in f else raw(f))
    else:
        packets = [bytes.fromhex(h) for h in req['packets']]
    return {'results': [decrypt_one(s, sa, p) for p in packets]}


def flip(b, i, bit=0x01):
    b = bytearray(b)
    b[i] ^= bit
    return bytes(b)


def encrypt_one(s, item):
    sa = make_sa(s, s.get('outer') if 'outer' not in item else item['outer'])
    plain = ip_packet(bytes.fromhex(item['packet']))
    seq = item['seq']
    iv = bytes.fromhex(item['iv']) if 'iv' in item else struct.pack('!Q', seq)
    variant = item.get('variant', 'valid')
    algo = sa.crypt_algo
    orig_pad = algo.pad

    def pad(esp):
        esp = orig_pad(esp)
        if variant == 'bad-pad':
            esp.padlen += 4
            p = bytearray(range(1, esp.padlen + 1))
            p[-1] ^= 0x80
            esp.padding = bytes(p)
        elif variant == 'bad-nh':
            esp.nh = 17 if s['mode'] == 'tunnel' else 59
        return esp

    algo.pad = pad
    try:
        out = sa.encrypt(plain, seq_num=seq, iv=iv)
    finally:
        algo.pad = orig_pad
    data = raw(out)
    off = esp_offset(ip_packet(data))
    if variant == 'tamper-icv':
        data = flip(data, len(data) - 1)
    elif variant == 'tamper-data':
        data = flip(data, off + 16 + 3, 0x40)
    elif variant == 'tamper-iv':
        data = flip(data, off + 8)
    elif variant == 'tamper-seq':
        data = data[:off + 4] + struct.pack('!I', seq + 1) + data[off + 8:]
    elif variant == 'truncate':
        data = fix_len(data[:off + 8 + 8 + 4])
    elif variant not in ('valid', 'bad-pad', 'bad-nh'):
        raise SystemExit(f'esp-peer: unknown variant {variant}')
    return {'packet': data.hex(), 'summary': ip_packet(data).summary()}


def fix_len(data):
    """Set the IP length fields (and IPv4 checksum) of a cut packet to its new length."""
    b = bytearray(data)
    if b[0] >> 4 == 4:
        struct.pack_into('!H', b, 2, len(b))
        struct.pack_into('!H', b, 10, 0)
        hl = (b[0] & 15) * 4
        s = sum(struct.unpack('!%dH' % (hl // 2), bytes(b[:hl])))
        while s > 0xffff:
            s = (s & 0xffff) + (s >> 16)
        struct.pack_into('!H', b, 10, ~s & 0xffff)
    else:
        struct.pack_into('!H', b, 4, len(b) - 40)
    return bytes(b)


def encrypt(req):
    return {'results': [encrypt_one(req['sa'], item) for item in req['packets']]}


def main():
    if len(sys.argv) != 2 or sys.argv[1] not in ('decrypt', 'encrypt'):
        raise SystemExit(__doc__)
    req = json.load(sys.stdin)
    run = decrypt if sys.argv[1] == 'decrypt' else encrypt
    # A list of requests (several SAs) gets a list of answers: one scapy start-up for all.
    res = [run(r) for r in req] if isinstance(req, list) else run(req)
    json.dump(res, sys.stdout)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
