// ESP (RFC 4303): the clear header, and the trailer that lives inside the
// encrypted part. Crypto is elsewhere (offload/ipsec); this is only layout.
//
//  0                               4                               8
// +-------------------------------+-------------------------------+
// |  Security Parameters Index    |        Sequence Number        |  clear
// +-------------------------------+-------------------------------+
// |  IV (per algorithm) | payload data ... | padding (0-255) |     |
// |                     |                  | 1, 2, 3, ...    |     |  encrypted
// +---------------------+------------------+--------+--------+    |
// |                                        |Pad Len | Next Hdr|    |
// +----------------------------------------+--------+--------+----+
// |  ICV (per algorithm)                                          |  clear
//
// Pad Length and Next Header end the plaintext, right-aligned to 4 bytes
// (or the cipher's block size). Without an algorithm-specific rule the
// padding bytes are 1, 2, 3, ... (§2.4), which a receiver should check.

import type { WireError } from './error.js';
import { get32, set32 } from './bytes.js';
import { fits, HeaderView } from './view.js';

export const ESP_HEADER_LEN = 8;
/** Pad Length + Next Header. */
export const ESP_TRAILER_MIN_LEN = 2;

export class EspView extends HeaderView {
  /** ESP packet length: header, encrypted part and ICV. */
  declare len: number;

  /**
   * Valid when the header fits and the SPI is not zero (reserved, never on
   * the wire, §2.1; over UDP port 4500 a zero marks an IKE message, RFC 3948).
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | null {
    if (!fits(buf, off, len)) return 'bad-length';
    if (len < ESP_HEADER_LEN) return 'truncated';
    if (get32(buf, off) === 0) return 'bad-type';
    return this.bind(buf, off, len);
  }

  get spi(): number { return get32(this.buf, this.off); }
  set spi(v: number) { set32(this.buf, this.off, v); }
  /** Low 32 bits of the sequence number (the high half of an ESN is never sent). */
  get seq(): number { return get32(this.buf, this.off + 4); }
  set seq(v: number) { set32(this.buf, this.off + 4, v); }
  get headerLen(): number { return ESP_HEADER_LEN; }
  /** Absolute offset of what follows the header: IV, then ciphertext. */
  get payloadOff(): number { return this.off + ESP_HEADER_LEN; }
  get payloadLen(): number { return this.len - ESP_HEADER_LEN; }
}

export interface EspRepr {
  spi: number;
  seq: number;
}

export function parseEsp(v: EspView): EspRepr {
  return { spi: v.spi, seq: v.seq };
}

export function espReprLen(_r: EspRepr): number {
  return ESP_HEADER_LEN;
}

export function emitEsp(r: EspRepr, buf: Uint8Array, off: number): number {
  set32(buf, off, r.spi);
  set32(buf, off + 4, r.seq);
  return ESP_HEADER_LEN;
}

/** The decrypted trailer, read by `parseEspTrailer` into a reused object. */
export class EspTrailer {
  /** Bytes of payload data before the padding. */
  dataLen = 0;
  padLen = 0;
  /** Protocol of the payload data (4 / 41 tunnel, 6 TCP, ...; 59 a dummy packet, §2.6). */
  nextHeader = 0;
}

/**
 * Reads the trailer at the end of the plaintext `[off, off+len)` (IV and ICV
 * already removed) into `out`. Checks that the padding fits and is the
 * default 1, 2, 3, ... sequence ('bad-option' otherwise).
 */
export function parseEspTrailer(buf: Uint8Array, off: number, len: number, out: EspTrailer): WireError | null {
  if (!fits(buf, off, len)) return 'bad-length';
  if (len < ESP_TRAILER_MIN_LEN) return 'truncated';
  const end = off + len;
  const padLen = buf[end - 2]!;
  if (padLen + ESP_TRAILER_MIN_LEN > len) return 'bad-length';
  const padOff = end - 2 - padLen;
  for (let i = 0; i < padLen; i++) {
    if (buf[padOff + i] !== i + 1) return 'bad-option';
  }
  out.dataLen = len - ESP_TRAILER_MIN_LEN - padLen;
  out.padLen = padLen;
  out.nextHeader = buf[end - 1]!;
  return null;
}

function checkAlign(align: number): void {
  if (!Number.isInteger(align) || align < 1 || align > 256) {
    throw new RangeError(`ESP alignment ${align} is not an integer in 1..256`);
  }
}

/** Padding bytes needed after `dataLen` bytes so the trailer ends on an `align` boundary. */
export function espPadLen(dataLen: number, align = 4): number {
  checkAlign(align);
  return (align - ((dataLen + ESP_TRAILER_MIN_LEN) % align)) % align;
}

/** Plaintext length after the trailer is appended to `dataLen` bytes. */
export function espPlaintextLen(dataLen: number, align = 4): number {
  return dataLen + espPadLen(dataLen, align) + ESP_TRAILER_MIN_LEN;
}

/**
 * Appends padding (1, 2, 3, ...), pad length and next header after the
 * `dataLen` bytes of payload data at `off`, so the plaintext is a multiple of
 * `align` (4, or the cipher's block size if larger); returns the plaintext
 * length. The caller sized `buf` with `espPlaintextLen`.
 */
export function emitEspTrailer(buf: Uint8Array, off: number, dataLen: number, nextHeader: number, align = 4): number {
  const pad = espPadLen(dataLen, align);
  const padOff = off + dataLen;
  for (let i = 0; i < pad; i++) buf[padOff + i] = i + 1;
  buf[padOff + pad] = pad;
  buf[padOff + pad + 1] = nextHeader;
  return dataLen + pad + ESP_TRAILER_MIN_LEN;
}
