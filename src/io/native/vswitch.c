// vswitch's native shim: the few Linux calls Node lacks, and nothing else.
// All packet logic stays in TypeScript; this file only moves bytes between
// file descriptors and the packet memory that JavaScript owns.
//
//   tapOpen(name, flags, vnetHdrSize)      TUNSETIFF (+ IFF_VNET_HDR, IFF_MULTI_QUEUE; flag 4: an L3 TUN), TUNSETVNETHDRSZ
//   rawOpen(family, protocol, device)      SOCK_RAW for one IP protocol (e.g. ESP), optionally bound to a device
//   sendTo(fd, buf, off, len, address)     one datagram to an IPv4/IPv6 address (raw sockets)
//   tapSetOffload(fd, tunFlags)            TUNSETOFFLOAD (flags by value)
//   packetOpen(ifname, vnetHdrSize, rcvbuf, flags)
//                                          AF_PACKET SOCK_RAW + PACKET_VNET_HDR(_SZ), SO_RCVBUFFORCE,
//                                          PACKET_IGNORE_OUTGOING, PACKET_AUXDATA, bound to the device
//   packetStats(fd)                        PACKET_STATISTICS [packets, drops] (read-and-reset)
//   ethtoolFeatures(ifname)                SIOCETHTOOL: [[name, active, fixed], ...]
//   ifIndex(name), close(fd), gettid()
//   readBatch(fd, mem, offs, caps, lens, tcis, max, mode)
//                                          read until EAGAIN (≤ max) into mem at offs[i]: one JS call
//                                          per batch; mode 1 = packet socket (recvmmsg + auxdata VLAN)
//   writeBatch(fd, mem, hdrOffs, hdrLen, offs, lens, tcis, count, mode)
//                                          gather-write [vnet header][frame with 802.1Q tag inserted]
//   pollStart(fd, events, cb) / pollStop(h)  uv_poll on the fd in Node's own event loop
//
// Set-up calls throw an Error naming the call and errno; data-path calls
// return counts (or -errno) and never throw for I/O conditions.

#define _GNU_SOURCE
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <linux/ethtool.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>

// AES-GCM for the ESP engine: Node's own OpenSSL (its headers ship with Node,
// its symbols are exported by the node binary), one cipher context per SA
// key, set up once — the per-packet cost is then the cipher itself.
#include <openssl/evp.h>

#ifndef PACKET_VNET_HDR_SZ
#define PACKET_VNET_HDR_SZ 24
#endif
#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif
#ifndef TP_STATUS_VLAN_VALID
#define TP_STATUS_VLAN_VALID (1 << 4)
#endif

#define MAX_BATCH 256

// --- argument helpers -------------------------------------------------------

static napi_value throw_errno(napi_env env, const char* what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s (errno %d)", what, strerror(err), err);
  napi_throw_error(env, NULL, msg);
  return NULL;
}

// Throw "fn: step: <err's text>".
static napi_value throw_step(napi_env env, const char* fn, const char* step, int err) {
  char what[64];
  snprintf(what, sizeof what, "%s: %s", fn, step);
  return throw_errno(env, what, err);
}

// A socket set-up step failed: close the socket and throw "fn: step: <errno's text>", with the
// errno of that step (nothing may run between the failed call and this one).
static napi_value close_and_throw(napi_env env, int fd, const char* fn, const char* step) {
  int e = errno;
  close(fd);
  return throw_step(env, fn, step, e);
}

static int32_t arg_i32(napi_env env, napi_value v) {
  int32_t x = 0;
  napi_get_value_int32(env, v, &x);
  return x;
}

static int arg_str(napi_env env, napi_value v, char* out, size_t cap) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, v, out, cap, &n) != napi_ok) return -1;
  return (int)n;
}

static void* arg_ta(napi_env env, napi_value v, size_t* bytes) {
  napi_typedarray_type type;
  size_t len = 0, off = 0;
  void* data = NULL;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok) return NULL;
  size_t el = (type == napi_int32_array || type == napi_uint32_array) ? 4 : 1;
  if (bytes) *bytes = len * el;
  return data;
}

static napi_value num(napi_env env, double x) {
  napi_value r;
  napi_create_double(env, x, &r);
  return r;
}

#define ARGS(n)                                             \
  size_t argc = (n);                                        \
  napi_value argv[(n) > 0 ? (n) : 1];                       \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);     \
  if (argc < (n)) {                                         \
    napi_throw_type_error(env, NULL, "too few arguments");  \
    return NULL;                                            \
  }

// --- set-up calls -------------------------------------------------------------

// tapOpen(name, flags: 1 vnet header | 2 multi-queue | 4 TUN (L3) instead of TAP, vnetHdrSize) -> [fd, name]
static napi_value tap_open(napi_env env, napi_callback_info info) {
  ARGS(3);
  char name[IFNAMSIZ] = {0};
  if (arg_str(env, argv[0], name, sizeof name) < 0) return throw_errno(env, "tapOpen: name", EINVAL);
  int32_t flags = arg_i32(env, argv[1]);
  int32_t hdrsz = arg_i32(env, argv[2]);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "tapOpen: open /dev/net/tun", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = ((flags & 4) ? IFF_TUN : IFF_TAP) | IFF_NO_PI;
  if (flags & 1) ifr.ifr_flags |= IFF_VNET_HDR;
  if (flags & 2) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  memcpy(ifr.ifr_name, name, strnlen(name, IFNAMSIZ - 1));
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "tapOpen: TUNSETIFF", e);
  }
  if ((flags & 1) && hdrsz > 0 && ioctl(fd, TUNSETVNETHDRSZ, &hdrsz) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "tapOpen: TUNSETVNETHDRSZ", e);
  }
  napi_value arr, s;
  napi_create_array_with_length(env, 2, &arr);
  napi_set_element(env, arr, 0, num(env, fd));
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &s);
  napi_set_element(env, arr, 1, s);
  return arr;
}

// tapSetOffload(fd, TUN_F_* flags)
static napi_value tap_set_offload(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd = arg_i32(env, argv[0]);
  unsigned long flags = (unsigned long)(uint32_t)arg_i32(env, argv[1]);
  if (ioctl(fd, TUNSETOFFLOAD, flags) < 0) return throw_errno(env, "tapSetOffload: TUNSETOFFLOAD", errno);
  return NULL;
}

static int if_index(const char* name) {
  return (int)if_nametoindex(name);
}

static napi_value if_index_js(napi_env env, napi_callback_info info) {
  ARGS(1);
  char name[IFNAMSIZ] = {0};
  arg_str(env, argv[0], name, sizeof name);
  return num(env, if_index(name));
}

// packetOpen(ifname, vnetHdrSize 0|10|12, rcvbuf bytes, flags: 1 ignore outgoing | 2 auxdata) -> fd
static napi_value packet_open(napi_env env, napi_callback_info info) {
  ARGS(4);
  char name[IFNAMSIZ] = {0};
  arg_str(env, argv[0], name, sizeof name);
  int32_t hdrsz = arg_i32(env, argv[1]);
  int32_t rcvbuf = arg_i32(env, argv[2]);
  int32_t flags = arg_i32(env, argv[3]);
  int ifindex = if_index(name);
  if (ifindex == 0) return throw_errno(env, "packetOpen: no such device", ENODEV);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) return throw_errno(env, "packetOpen: socket(AF_PACKET)", errno);
  int one = 1;
  const char* step = NULL;
  if (hdrsz > 0) {
    if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) step = "PACKET_VNET_HDR";
    else if (hdrsz != 10 && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR_SZ, &hdrsz, sizeof hdrsz) < 0) step = "PACKET_VNET_HDR_SZ";
  }
  if (!step && rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) step = "SO_RCVBUFFORCE";
  if (!step && rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) step = "SO_SNDBUFFORCE";
  if (!step && (flags & 1) && setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) step = "PACKET_IGNORE_OUTGOING";
  if (!step && (flags & 2) && setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) step = "PACKET_AUXDATA";
  if (!step) {
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex;
    if (bind(fd, (struct sockaddr*)&sll, sizeof sll) < 0) step = "bind";
  }
  if (step) return close_and_throw(env, fd, "packetOpen", step);
  return num(env, fd);
}

// An IPv4 or IPv6 literal and a port as a socket address; false if `host` is neither.
static bool inet_address(const char* host, int port, struct sockaddr_storage* out, socklen_t* len) {
  memset(out, 0, sizeof *out);
  struct sockaddr_in* v4 = (struct sockaddr_in*)out;
  struct sockaddr_in6* v6 = (struct sockaddr_in6*)out;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return true;
  }
  return false;
}

// udpOpen(localHost, localPort, remoteHost, remotePort, bufBytes) -> fd: a UDP socket bound to
// the local address and connected to the remote one (it hears only that peer), O_NONBLOCK — a
// QEMU `-netdev dgram` NIC: one Ethernet frame per datagram, read with recvmmsg, written with
// sendmmsg. bufBytes > 0: SO_RCVBUFFORCE/SO_SNDBUFFORCE.
static napi_value udp_open(napi_env env, napi_callback_info info) {
  ARGS(5);
  char lhost[64] = {0}, rhost[64] = {0};
  arg_str(env, argv[0], lhost, sizeof lhost);
  int32_t lport = arg_i32(env, argv[1]);
  arg_str(env, argv[2], rhost, sizeof rhost);
  int32_t rport = arg_i32(env, argv[3]);
  int32_t buf = arg_i32(env, argv[4]);
  struct sockaddr_storage la, ra;
  socklen_t llen = 0, rlen = 0;
  if (lport < 0 || lport > 65535 || rport <= 0 || rport > 65535 || !inet_address(lhost, lport, &la, &llen) || !inet_address(rhost, rport, &ra, &rlen)) {
    napi_throw_range_error(env, NULL, "udpOpen: IP address literals and ports 1-65535 expected");
    return NULL;
  }
  if (la.ss_family != ra.ss_family) {
    napi_throw_range_error(env, NULL, "udpOpen: the local and remote addresses are of different families");
    return NULL;
  }
  int fd = socket(la.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "udpOpen: socket", errno);
  const char* step = NULL;
  if (buf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0) step = "SO_RCVBUFFORCE";
  if (!step && buf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0) step = "SO_SNDBUFFORCE";
  if (!step && bind(fd, (struct sockaddr*)&la, llen) < 0) step = "bind";
  if (!step && connect(fd, (struct sockaddr*)&ra, rlen) < 0) step = "connect";
  if (step) return close_and_throw(env, fd, "udpOpen", step);
  return num(env, fd);
}

// packetStats(fd, out Uint32Array(2)): out = [packets, drops] since the last call (the kernel
// resets them). Called by the uplink's feature watch several times a second: nothing allocated.
static napi_value packet_stats(napi_env env, napi_callback_info info) {
  ARGS(2);
  int fd = arg_i32(env, argv[0]);
  size_t bytes = 0;
  uint32_t* out = arg_ta(env, argv[1], &bytes);
  if (!out || bytes < 8) { napi_throw_type_error(env, NULL, "packetStats: a Uint32Array(2) expected"); return NULL; }
  struct tpacket_stats st;
  socklen_t len = sizeof st;
  if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) < 0) return throw_errno(env, "packetStats", errno);
  out[0] = st.tp_packets;
  out[1] = st.tp_drops;
  return NULL;
}

// A socket for SIOCETHTOOL on `name` and the number of its features (ETHTOOL_GSSET_INFO);
// on failure -1, nothing left open, and "fn: step: …" thrown.
static int ethtool_begin(napi_env env, const char* fn, const char* name, struct ifreq* ifr, uint32_t* count) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_step(env, fn, "socket", errno);
    return -1;
  }
  memset(ifr, 0, sizeof *ifr);
  memcpy(ifr->ifr_name, name, strnlen(name, IFNAMSIZ - 1));
  struct { struct ethtool_sset_info hdr; uint32_t buf[1]; } sset;
  memset(&sset, 0, sizeof sset);
  sset.hdr.cmd = ETHTOOL_GSSET_INFO;
  sset.hdr.sset_mask = 1ULL << ETH_SS_FEATURES;
  ifr->ifr_data = (void*)&sset;
  if (ioctl(fd, SIOCETHTOOL, ifr) < 0) {
    close_and_throw(env, fd, fn, "ETHTOOL_GSSET_INFO");
    return -1;
  }
  *count = sset.hdr.sset_mask ? sset.buf[0] : 0;
  return fd;
}

#define ETHTOOL_WATCH_BLOCKS 16

// ethtoolActive(ifname, out Uint32Array) -> feature count; bit i of out (word i/32) = feature i
// active. The feature watch's cheap check (GSSET_INFO + GFEATURES, no names, nothing allocated);
// ethtoolFeatures gives the names when the bits change.
static napi_value ethtool_active(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[IFNAMSIZ] = {0};
  arg_str(env, argv[0], name, sizeof name);
  size_t bytes = 0;
  uint32_t* out = arg_ta(env, argv[1], &bytes);
  if (!out) { napi_throw_type_error(env, NULL, "ethtoolActive: a Uint32Array expected"); return NULL; }
  struct ifreq ifr;
  uint32_t n = 0;
  int fd = ethtool_begin(env, "ethtoolActive", name, &ifr, &n);
  if (fd < 0) return NULL;
  uint32_t blocks = (n + 31) / 32;
  if (blocks > ETHTOOL_WATCH_BLOCKS || blocks * 4 > bytes) { close(fd); napi_throw_range_error(env, NULL, "ethtoolActive: more features than the array holds"); return NULL; }
  struct { struct ethtool_gfeatures hdr; struct ethtool_get_features_block b[ETHTOOL_WATCH_BLOCKS]; } feats;
  memset(&feats, 0, sizeof feats);
  feats.hdr.cmd = ETHTOOL_GFEATURES;
  feats.hdr.size = blocks;
  ifr.ifr_data = (void*)&feats;
  int ok = ioctl(fd, SIOCETHTOOL, &ifr) >= 0;
  int e = errno;
  close(fd);
  if (!ok) return throw_errno(env, "ethtoolActive: ETHTOOL_GFEATURES", e);
  for (uint32_t i = 0; i < blocks; i++) out[i] = feats.hdr.features[i].active;
  return num(env, n);
}

// ethtoolFeatures(ifname) -> [[name, active, fixed], ...]  (ETHTOOL_GSSET_INFO/GSTRINGS/GFEATURES)
static napi_value ethtool_features(napi_env env, napi_callback_info info) {
  ARGS(1);
  char name[IFNAMSIZ] = {0};
  arg_str(env, argv[0], name, sizeof name);
  struct ifreq ifr;
  uint32_t n = 0;
  int fd = ethtool_begin(env, "ethtoolFeatures", name, &ifr, &n);
  if (fd < 0) return NULL;

  struct ethtool_gstrings* strs = calloc(1, sizeof *strs + (size_t)n * ETH_GSTRING_LEN);
  uint32_t blocks = (n + 31) / 32;
  struct ethtool_gfeatures* feats = calloc(1, sizeof *feats + blocks * sizeof(struct ethtool_get_features_block));
  if (!strs || !feats) { free(strs); free(feats); close(fd); return throw_errno(env, "ethtoolFeatures", ENOMEM); }
  strs->cmd = ETHTOOL_GSTRINGS;
  strs->string_set = ETH_SS_FEATURES;
  strs->len = n;
  ifr.ifr_data = (void*)strs;
  int ok = ioctl(fd, SIOCETHTOOL, &ifr) >= 0;
  if (ok) {
    feats->cmd = ETHTOOL_GFEATURES;
    feats->size = blocks;
    ifr.ifr_data = (void*)feats;
    ok = ioctl(fd, SIOCETHTOOL, &ifr) >= 0;
  }
  int e = errno;
  close(fd);
  if (!ok) { free(strs); free(feats); return throw_errno(env, "ethtoolFeatures: ETHTOOL_GSTRINGS/GFEATURES", e); }

  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t out = 0;
  for (uint32_t i = 0; i < n; i++) {
    const char* s = (const char*)strs->data + (size_t)i * ETH_GSTRING_LEN;
    if (s[0] == 0) continue;
    uint32_t bit = 1u << (i % 32);
    const struct ethtool_get_features_block* b = &feats->features[i / 32];
    napi_value row, str, active, fixed;
    napi_create_array_with_length(env, 3, &row);
    napi_create_string_utf8(env, s, strnlen(s, ETH_GSTRING_LEN), &str);
    napi_get_boolean(env, (b->active & bit) != 0, &active);
    napi_get_boolean(env, (b->never_changed & bit) != 0 || (b->available & bit) == 0, &fixed);
    napi_set_element(env, row, 0, str);
    napi_set_element(env, row, 1, active);
    napi_set_element(env, row, 2, fixed);
    napi_set_element(env, arr, out++, row);
  }
  free(strs);
  free(feats);
  return arr;
}

// rawOpen(family 4|6, protocol, device or "", rcvbuf bytes or 0) -> fd (O_NONBLOCK). The kernel writes the IP header on send.
static napi_value raw_open(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return NULL;
  }
  int32_t rcvbuf = argc >= 4 ? arg_i32(env, argv[3]) : 0;
  int family = arg_i32(env, argv[0]) == 6 ? AF_INET6 : AF_INET;
  int proto = arg_i32(env, argv[1]);
  char dev[IFNAMSIZ] = {0};
  arg_str(env, argv[2], dev, sizeof dev);
  int fd = socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
  if (fd < 0) return throw_errno(env, "rawOpen: socket(SOCK_RAW)", errno);
  if (dev[0] != 0 && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, (socklen_t)strnlen(dev, IFNAMSIZ)) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "rawOpen: SO_BINDTODEVICE", e);
  }
  if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "rawOpen: SO_RCVBUFFORCE", e);
  }
  return num(env, fd);
}

// sendTo(fd, buf, off, len, address) -> bytes sent or -errno
static napi_value send_to(napi_env env, napi_callback_info info) {
  ARGS(5);
  int fd = arg_i32(env, argv[0]);
  size_t blen = 0;
  uint8_t* buf = arg_ta(env, argv[1], &blen);
  int32_t off = arg_i32(env, argv[2]);
  int32_t len = arg_i32(env, argv[3]);
  char addr[64] = {0};
  arg_str(env, argv[4], addr, sizeof addr);
  if (!buf || off < 0 || len < 0 || (size_t)off + (size_t)len > blen) { napi_throw_range_error(env, NULL, "sendTo: range outside the buffer"); return NULL; }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl;
  if (strchr(addr, ':') != NULL) {
    struct sockaddr_in6* a = (struct sockaddr_in6*)&ss;
    a->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, addr, &a->sin6_addr) != 1) return throw_errno(env, "sendTo: bad IPv6 address", EINVAL);
    sl = sizeof *a;
  } else {
    struct sockaddr_in* a = (struct sockaddr_in*)&ss;
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, addr, &a->sin_addr) != 1) return throw_errno(env, "sendTo: bad IPv4 address", EINVAL);
    sl = sizeof *a;
  }
  ssize_t r;
  do { r = sendto(fd, buf + off, (size_t)len, MSG_DONTWAIT, (struct sockaddr*)&ss, sl); } while (r < 0 && errno == EINTR);
  return num(env, r < 0 ? -errno : (double)r);
}

// gettid() -> the calling thread's kernel thread id (its /proc/self/task/TID: per-thread CPU time).
static napi_value gettid_js(napi_env env, napi_callback_info info) {
  (void)info;
  return num(env, (double)syscall(SYS_gettid));
}

// eventfdOpen() -> fd (non-blocking, close-on-exec): a doorbell between threads' event loops.
static napi_value eventfd_open(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfdOpen", errno);
  return num(env, fd);
}

// eventfdRing(fd): add 1 (wakes a poller). Never blocks; a full counter is already ringing.
static napi_value eventfd_ring(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint64_t one = 1;
  ssize_t r = write(arg_i32(env, argv[0]), &one, sizeof one);
  return num(env, r < 0 ? -errno : 0);
}

// eventfdDrain(fd) -> the count since the last drain (0 if none).
static napi_value eventfd_drain(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint64_t v = 0;
  ssize_t r = read(arg_i32(env, argv[0]), &v, sizeof v);
  return num(env, r < 0 ? 0 : (double)v);
}

// clockNs(out: Float64Array): out[0] = CLOCK_MONOTONIC in nanoseconds. Written
// into the caller's array, not returned: a returned double would be a new heap
// number for every software offload the switch times and charges.
static napi_value clock_ns(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_typedarray_type type;
  size_t len = 0;
  void* data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float64_array || len < 1) {
    napi_throw_type_error(env, NULL, "clockNs: a Float64Array");
    return NULL;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ((double*)data)[0] = (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
  return NULL;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int fd = arg_i32(env, argv[0]);
  return num(env, close(fd) < 0 ? -errno : 0);
}

// --- data path -------------------------------------------------------------------

// readBatch(fd, mem, offs, caps, lens, tcis, max, mode) -> count, or -errno if none was read.
// Slot i receives at mem[offs[i] .. offs[i] + caps[i]); lens[i] = bytes (vnet header
// included), or -1 for a frame larger than the slot (dropped by the caller, counted).
// mode 0: read() loop (TAP). mode 1: recvmmsg with PACKET_AUXDATA; tcis[i] = VLAN
// TCI (-1: none), with the TPID in bits 16..31 when the kernel reports it.
static napi_value read_batch(napi_env env, napi_callback_info info) {
  ARGS(8);
  int fd = arg_i32(env, argv[0]);
  size_t memlen = 0;
  uint8_t* mem = arg_ta(env, argv[1], &memlen);
  size_t nb = 0;
  int32_t* offs = arg_ta(env, argv[2], &nb);
  int32_t* caps = arg_ta(env, argv[3], NULL);
  int32_t* lens = arg_ta(env, argv[4], NULL);
  int32_t* tcis = arg_ta(env, argv[5], NULL);
  int32_t max = arg_i32(env, argv[6]);
  int32_t mode = arg_i32(env, argv[7]);
  if (!mem || !offs || !caps || !lens || !tcis) { napi_throw_type_error(env, NULL, "readBatch: typed arrays expected"); return NULL; }
  if (max > (int32_t)(nb / 4)) max = (int32_t)(nb / 4);
  if (max > MAX_BATCH) max = MAX_BATCH;
  for (int32_t i = 0; i < max; i++) {
    if (offs[i] < 0 || caps[i] <= 0 || (size_t)offs[i] + (size_t)caps[i] > memlen) {
      napi_throw_range_error(env, NULL, "readBatch: slot outside packet memory");
      return NULL;
    }
  }
  int count = 0;
  if (mode == 0) {
    while (count < max) {
      ssize_t r = read(fd, mem + offs[count], (size_t)caps[count]);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (count == 0) return num(env, -errno);
        break;
      }
      lens[count] = (int32_t)r;
      tcis[count] = -1;
      count++;
    }
    return num(env, count);
  }
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(struct tpacket_auxdata))]; } ctl[MAX_BATCH];
  memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)max);
  for (int32_t i = 0; i < max; i++) {
    iov[i].iov_base = mem + offs[i];
    iov[i].iov_len = (size_t)caps[i];
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_control = ctl[i].buf;
    msgs[i].msg_hdr.msg_controllen = sizeof ctl[i].buf;
  }
  int r;
  do { r = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT | MSG_TRUNC, NULL); } while (r < 0 && errno == EINTR);
  if (r < 0) return num(env, -errno);
  for (int i = 0; i < r; i++) {
    lens[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) || msgs[i].msg_len > (unsigned)caps[i] ? -1 : (int32_t)msgs[i].msg_len;
    tcis[i] = -1;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
      if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
      struct tpacket_auxdata aux;
      memcpy(&aux, CMSG_DATA(c), sizeof aux);
      if (aux.tp_vlan_tci != 0 || (aux.tp_status & TP_STATUS_VLAN_VALID)) {
        uint32_t tpid = (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) ? aux.tp_vlan_tpid : 0x8100;
        tcis[i] = (int32_t)((tpid << 16) | aux.tp_vlan_tci);
      }
    }
  }
  return num(env, r);
}

// writeBatch(fd, mem, hdrOffs, hdrLen, offs, lens, tcis, count, mode) -> frames sent, or -errno if none.
// Frame i is sent as [mem[hdrOffs[i]], hdrLen bytes (when hdrLen > 0)]
// [frame bytes 0..12][802.1Q tag tcis[i] when ≥ 0][frame bytes 12..].
// mode 0: one writev per frame (TAP). mode 1: sendmmsg (packet socket).
static napi_value write_batch(napi_env env, napi_callback_info info) {
  ARGS(9);
  int fd = arg_i32(env, argv[0]);
  size_t memlen = 0;
  uint8_t* mem = arg_ta(env, argv[1], &memlen);
  size_t nb = 0;
  int32_t* hoffs = arg_ta(env, argv[2], &nb);
  int32_t hdrlen = arg_i32(env, argv[3]);
  int32_t* offs = arg_ta(env, argv[4], NULL);
  int32_t* lens = arg_ta(env, argv[5], NULL);
  int32_t* tcis = arg_ta(env, argv[6], NULL);
  int32_t count = arg_i32(env, argv[7]);
  int32_t mode = arg_i32(env, argv[8]);
  if (!mem || !hoffs || !offs || !lens || !tcis) { napi_throw_type_error(env, NULL, "writeBatch: typed arrays expected"); return NULL; }
  if (count > (int32_t)(nb / 4)) count = (int32_t)(nb / 4);
  if (count > MAX_BATCH) count = MAX_BATCH;
  // On the stack: worker threads each load this module into their own
  // environment and may write at the same time.
  struct iovec iov[MAX_BATCH][4];
  uint8_t tags[MAX_BATCH][4];
  struct mmsghdr msgs[MAX_BATCH];
  for (int32_t i = 0; i < count; i++) {
    if (offs[i] < 0 || lens[i] < 14 || (size_t)offs[i] + (size_t)lens[i] > memlen ||
        (hdrlen > 0 && (hoffs[i] < 0 || (size_t)hoffs[i] + (size_t)hdrlen > memlen))) {
      napi_throw_range_error(env, NULL, "writeBatch: frame outside packet memory");
      return NULL;
    }
    int n = 0;
    if (hdrlen > 0) { iov[i][n].iov_base = mem + hoffs[i]; iov[i][n].iov_len = (size_t)hdrlen; n++; }
    if (tcis[i] >= 0) {
      uint16_t tpid = 0x8100, tci = (uint16_t)(tcis[i] & 0xffff);
      tags[i][0] = (uint8_t)(tpid >> 8); tags[i][1] = (uint8_t)tpid;
      tags[i][2] = (uint8_t)(tci >> 8); tags[i][3] = (uint8_t)tci;
      iov[i][n].iov_base = mem + offs[i]; iov[i][n].iov_len = 12; n++;
      iov[i][n].iov_base = tags[i]; iov[i][n].iov_len = 4; n++;
      iov[i][n].iov_base = mem + offs[i] + 12; iov[i][n].iov_len = (size_t)lens[i] - 12; n++;
    } else {
      iov[i][n].iov_base = mem + offs[i]; iov[i][n].iov_len = (size_t)lens[i]; n++;
    }
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = iov[i];
    msgs[i].msg_hdr.msg_iovlen = (size_t)n;
  }
  if (mode == 1) {
    int sent = 0;
    while (sent < count) {
      int r = sendmmsg(fd, msgs + sent, (unsigned)(count - sent), MSG_DONTWAIT);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (sent == 0) return num(env, -errno);
        break;
      }
      sent += r;
    }
    return num(env, sent);
  }
  int sent = 0;
  for (; sent < count; sent++) {
    ssize_t r;
    do { r = writev(fd, msgs[sent].msg_hdr.msg_iov, (int)msgs[sent].msg_hdr.msg_iovlen); } while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (sent == 0) return num(env, -errno);
      break;
    }
  }
  return num(env, sent);
}

// --- AES-GCM (RFC 4106 ESP) ------------------------------------------------------

#define AEAD_SCRATCH (65536 + 256)

typedef struct {
  EVP_CIPHER_CTX* enc;
  EVP_CIPHER_CTX* dec;
  uint8_t* scratch;  // decrypt lands here first: nothing is written back unless the tag verifies
} aead_t;

static void aead_finalize(napi_env env, void* data, void* hint) {
  (void)env; (void)hint;
  aead_t* a = (aead_t*)data;
  EVP_CIPHER_CTX_free(a->enc);
  EVP_CIPHER_CTX_free(a->dec);
  free(a->scratch);
  free(a);
}

// aeadNew(key 16|32 bytes) -> handle
static napi_value aead_new(napi_env env, napi_callback_info info) {
  ARGS(1);
  size_t klen = 0;
  uint8_t* key = arg_ta(env, argv[0], &klen);
  const EVP_CIPHER* c = klen == 16 ? EVP_aes_128_gcm() : klen == 32 ? EVP_aes_256_gcm() : NULL;
  if (!key || !c) { napi_throw_range_error(env, NULL, "aeadNew: key must be 16 or 32 bytes"); return NULL; }
  aead_t* a = calloc(1, sizeof *a);
  if (!a) return throw_errno(env, "aeadNew", ENOMEM);
  a->enc = EVP_CIPHER_CTX_new();
  a->dec = EVP_CIPHER_CTX_new();
  a->scratch = malloc(AEAD_SCRATCH);
  int ok = a->enc && a->dec && a->scratch &&
    EVP_EncryptInit_ex(a->enc, c, NULL, NULL, NULL) == 1 && EVP_CIPHER_CTX_ctrl(a->enc, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
    EVP_EncryptInit_ex(a->enc, NULL, NULL, key, NULL) == 1 &&
    EVP_DecryptInit_ex(a->dec, c, NULL, NULL, NULL) == 1 && EVP_CIPHER_CTX_ctrl(a->dec, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
    EVP_DecryptInit_ex(a->dec, NULL, NULL, key, NULL) == 1;
  if (!ok) {
    aead_finalize(env, a, NULL);
    napi_throw_error(env, NULL, "aeadNew: OpenSSL could not set up AES-GCM");
    return NULL;
  }
  napi_value h;
  napi_create_external(env, a, aead_finalize, NULL, &h);
  return h;
}

// The arguments aeadSeal and aeadOpen share: (h, nonce(12), aad, buf, off, len, tag, tagOff).
typedef struct {
  aead_t* a;
  uint8_t *nonce, *aad, *buf, *tag;
  size_t alen;
  int32_t off, len, toff;
} aead_call_t;

// Parse and bounds-check them; false when anything is off (a missing handle,
// a nonce that is not 12 bytes, a range outside its array, a tag without 16 bytes).
static bool aead_args(napi_env env, napi_callback_info info, aead_call_t* c) {
  size_t argc = 8;
  napi_value argv[8];
  c->a = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 8) return false;
  napi_get_value_external(env, argv[0], (void**)&c->a);
  size_t nlen = 0, blen = 0, tlen = 0;
  c->nonce = arg_ta(env, argv[1], &nlen);
  c->aad = arg_ta(env, argv[2], &c->alen);
  c->buf = arg_ta(env, argv[3], &blen);
  c->off = arg_i32(env, argv[4]);
  c->len = arg_i32(env, argv[5]);
  c->tag = arg_ta(env, argv[6], &tlen);
  c->toff = arg_i32(env, argv[7]);
  return c->a && c->nonce && nlen == 12 && c->buf && c->off >= 0 && c->len >= 0 && (size_t)c->off + (size_t)c->len <= blen &&
    c->tag && c->toff >= 0 && (size_t)c->toff + 16 <= tlen;
}

// aeadSeal(h, nonce(12), aad, buf, off, len, tag, tagOff): encrypt buf[off..off+len) in place, tag out.
static napi_value aead_seal(napi_env env, napi_callback_info info) {
  aead_call_t c;
  if (!aead_args(env, info, &c)) {
    napi_throw_range_error(env, NULL, "aeadSeal: bad arguments");
    return NULL;
  }
  aead_t* a = c.a;
  uint8_t* p = c.buf + c.off;
  int outl = 0, ok = EVP_EncryptInit_ex(a->enc, NULL, NULL, NULL, c.nonce) == 1 &&
    (c.alen == 0 || EVP_EncryptUpdate(a->enc, NULL, &outl, c.aad, (int)c.alen) == 1) &&
    EVP_EncryptUpdate(a->enc, p, &outl, p, c.len) == 1 &&
    EVP_EncryptFinal_ex(a->enc, p + outl, &outl) == 1 &&
    EVP_CIPHER_CTX_ctrl(a->enc, EVP_CTRL_GCM_GET_TAG, 16, c.tag + c.toff) == 1;
  if (!ok) napi_throw_error(env, NULL, "aeadSeal: OpenSSL failed");
  return NULL;
}

// aeadOpen(h, nonce, aad, buf, off, len, tag, tagOff) -> true and the plaintext in place, or false and buf untouched.
static napi_value aead_open(napi_env env, napi_callback_info info) {
  aead_call_t c;
  napi_value r;
  if (!aead_args(env, info, &c) || c.len > AEAD_SCRATCH) {
    napi_get_boolean(env, false, &r);
    return r;
  }
  aead_t* a = c.a;
  int outl = 0, fin = 0;
  int ok = EVP_DecryptInit_ex(a->dec, NULL, NULL, NULL, c.nonce) == 1 &&
    (c.alen == 0 || EVP_DecryptUpdate(a->dec, NULL, &outl, c.aad, (int)c.alen) == 1) &&
    EVP_DecryptUpdate(a->dec, a->scratch, &outl, c.buf + c.off, c.len) == 1 &&
    EVP_CIPHER_CTX_ctrl(a->dec, EVP_CTRL_GCM_SET_TAG, 16, c.tag + c.toff) == 1 &&
    EVP_DecryptFinal_ex(a->dec, a->scratch + outl, &fin) == 1;
  if (ok) memcpy(c.buf + c.off, a->scratch, (size_t)c.len);
  napi_get_boolean(env, ok, &r);
  return r;
}

// --- event loop integration ----------------------------------------------------

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
  int closing;
  // Closes the handle if its environment goes away first (a worker thread
  // terminated with polls still running): Node refuses to close a loop that
  // still has handles open, and aborts the process.
  napi_async_cleanup_hook_handle teardown;
  int fd;
  int uvev;
  // A socket (an uplink's packet socket, a QEMU dgram port's UDP socket): POLLERR there is a
  // pending socket error, not a dead fd.
  int sock;
} poller_t;

static void on_poll(uv_poll_t* h, int status, int events) {
  poller_t* p = (poller_t*)h->data;
  if (p->closing) return;
  if (status == UV_EBADF && p->sock) {
    // libuv turns POLLERR into UV_EBADF and stops the handle. On a socket POLLERR
    // is a pending error and the fd is fine: an ICMP error for an earlier send on
    // a connected UDP socket (port unreachable: the VM is not running), ENETDOWN on
    // a packet socket whose device was set down (it receives again once the device
    // is up). Take the error (reading SO_ERROR clears it), poll on, and trouble
    // JavaScript with nothing; a device that is gone for good is the uplink's
    // feature watch's to notice.
    // Only an error actually taken: a POLLERR with none pending (an error queue,
    // say) would fire again at once, so it goes to JavaScript as before.
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      uv_poll_start(&p->poll, p->uvev, on_poll);
      return;
    }
  }
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, global, argv[2], result;
  napi_get_reference_value(env, p->cb, &cb);
  napi_get_global(env, &global);
  napi_create_int32(env, status, &argv[0]);
  napi_create_int32(env, events, &argv[1]);
  napi_status st = napi_call_function(env, global, cb, 2, argv, &result);
  if (st == napi_pending_exception) {
    // An exception in the callback is the JavaScript side's bug: report it
    // like any uncaught exception instead of losing it inside libuv.
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

static void on_close(uv_handle_t* h) {
  poller_t* p = (poller_t*)h->data;
  napi_delete_reference(p->env, p->cb);
  free(p);
}

// The environment is being torn down: the JavaScript side will not stop this
// poll any more. Close it; once closed, tell Node it may close the loop. (The
// callback's reference goes with the environment.)
static void on_teardown_close(uv_handle_t* h) {
  poller_t* p = (poller_t*)h->data;
  napi_remove_async_cleanup_hook(p->teardown);
  free(p);
}

static void poller_teardown(napi_async_cleanup_hook_handle handle, void* arg) {
  poller_t* p = (poller_t*)arg;
  p->teardown = handle;
  p->closing = 1;
  uv_poll_stop(&p->poll);
  uv_close((uv_handle_t*)&p->poll, on_teardown_close);
}

static void poller_finalize(napi_env env, void* data, void* hint) {
  (void)env; (void)data; (void)hint;
  // The handle owns itself until pollStop closes it; nothing to do here.
}

// pollStart(fd, events: 1 readable | 2 writable, cb(status, events)) -> handle
static napi_value poll_start(napi_env env, napi_callback_info info) {
  ARGS(3);
  int fd = arg_i32(env, argv[0]);
  int events = arg_i32(env, argv[1]);
  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  poller_t* p = calloc(1, sizeof *p);
  if (!p) return throw_errno(env, "pollStart", ENOMEM);
  p->env = env;
  napi_create_reference(env, argv[2], 1, &p->cb);
  int r = uv_poll_init(loop, &p->poll, fd);
  if (r < 0) {
    napi_delete_reference(env, p->cb);
    free(p);
    return throw_errno(env, "pollStart: uv_poll_init", -r);
  }
  p->poll.data = p;
  p->fd = fd;
  int type = 0;
  socklen_t tlen = sizeof type;
  p->sock = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0;
  int uvev = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  p->uvev = uvev;
  r = uv_poll_start(&p->poll, uvev, on_poll);
  if (r < 0) {
    uv_close((uv_handle_t*)&p->poll, on_close);
    return throw_errno(env, "pollStart: uv_poll_start", -r);
  }
  napi_add_async_cleanup_hook(env, poller_teardown, p, &p->teardown);
  napi_value handle;
  napi_create_external(env, p, poller_finalize, NULL, &handle);
  return handle;
}

// pollStop(handle): stop and release; safe to call once per handle.
static napi_value poll_stop(napi_env env, napi_callback_info info) {
  ARGS(1);
  poller_t* p = NULL;
  if (napi_get_value_external(env, argv[0], (void**)&p) != napi_ok || !p || p->closing) return NULL;
  p->closing = 1;
  napi_remove_async_cleanup_hook(p->teardown);
  uv_poll_stop(&p->poll);
  uv_close((uv_handle_t*)&p->poll, on_close);
  return NULL;
}

// pollUpdate(handle, events): change what is watched (e.g. add writable while a queue is blocked).
static napi_value poll_update(napi_env env, napi_callback_info info) {
  ARGS(2);
  poller_t* p = NULL;
  if (napi_get_value_external(env, argv[0], (void**)&p) != napi_ok || !p || p->closing) return NULL;
  int events = arg_i32(env, argv[1]);
  int uvev = ((events & 1) ? UV_READABLE : 0) | ((events & 2) ? UV_WRITABLE : 0);
  p->uvev = uvev;
  uv_poll_start(&p->poll, uvev, on_poll);
  return NULL;
}

// --- module -------------------------------------------------------------------------

#define EXPORT(name, fn)                                              \
  do {                                                                \
    napi_value f;                                                     \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);  \
    napi_set_named_property(env, exports, name, f);                   \
  } while (0)

NAPI_MODULE_INIT() {
  EXPORT("tapOpen", tap_open);
  EXPORT("tapSetOffload", tap_set_offload);
  EXPORT("packetOpen", packet_open);
  EXPORT("packetStats", packet_stats);
  EXPORT("ethtoolFeatures", ethtool_features);
  EXPORT("ethtoolActive", ethtool_active);
  EXPORT("udpOpen", udp_open);
  EXPORT("ifIndex", if_index_js);
  EXPORT("close", close_fd);
  EXPORT("clockNs", clock_ns);
  EXPORT("rawOpen", raw_open);
  EXPORT("eventfdOpen", eventfd_open);
  EXPORT("gettid", gettid_js);
  EXPORT("aeadNew", aead_new);
  EXPORT("aeadSeal", aead_seal);
  EXPORT("aeadOpen", aead_open);
  EXPORT("eventfdRing", eventfd_ring);
  EXPORT("eventfdDrain", eventfd_drain);
  EXPORT("sendTo", send_to);
  EXPORT("readBatch", read_batch);
  EXPORT("writeBatch", write_batch);
  EXPORT("pollStart", poll_start);
  EXPORT("pollStop", poll_stop);
  EXPORT("pollUpdate", poll_update);
  return exports;
}
