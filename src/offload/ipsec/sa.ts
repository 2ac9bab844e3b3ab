// IPsec security associations as vswitch offloads them: ESP with AES-GCM
// (RFC 4106), transport or tunnel mode, one direction each (RFC 4301 §4.1).
// The switch's ESP engine (esp.ts) is the "IPsec-capable NIC" of an external
// port; an SA lives there while its destination is reachable through that
// port, and goes back to the VM (upload) the moment it is not.

export type IpsecMode = 'transport' | 'tunnel';
export type SaDirection = 'out' | 'in';
export type EspAlgorithm = 'aes-gcm-128' | 'aes-gcm-256';

/** Bytes of key material per algorithm (RFC 4106 §8.1: the 4-byte salt is separate here). */
export const ESP_KEY_BYTES: Record<EspAlgorithm, number> = { 'aes-gcm-128': 16, 'aes-gcm-256': 32 };
export const ESP_SALT_BYTES = 4;
/** RFC 4106: 8-byte explicit IV, 16-byte ICV. */
export const ESP_IV_BYTES = 8;
export const ESP_ICV_BYTES = 16;
export const ESP_HEADER_BYTES = 8;
export const DEFAULT_REPLAY_WINDOW = 64;
/** Largest anti-replay window supported (bits). */
export const MAX_REPLAY_WINDOW = 1024;

/** Which packets an SA protects (RFC 4301 §4.4.1.1), as text prefixes; for tunnel mode, the inner packets. */
export interface TrafficSelector {
  /** Source prefix (e.g. 198.18.0.1/32); default: the SA's src. */
  src?: string;
  /** Destination prefix; default: the SA's dst. */
  dst?: string;
  /** IP protocol (6 TCP, 17 UDP, ...); default any. */
  protocol?: number;
  srcPort?: number;
  dstPort?: number;
}

export interface SecurityAssociation {
  spi: number;
  direction: SaDirection;
  mode: IpsecMode;
  algorithm: EspAlgorithm;
  /** AES key (16 or 32 bytes), hex in the API. */
  key: Uint8Array;
  /** GCM salt (4 bytes). */
  salt: Uint8Array;
  /** The SA's endpoints: the hosts (transport) or the tunnel endpoints (tunnel). */
  src: string;
  dst: string;
  selector?: TrafficSelector;
  /** Outbound: the next sequence number to send (default 1). */
  seq?: number;
  /** Inbound: anti-replay window size in packets (default 64; 0 disables). */
  replayWindow?: number;
}

/** The receive side's replay state, carried in an upload so the VM continues where the switch left off. */
export interface ReplayState {
  /** Highest sequence number accepted. */
  top: number;
  /** Accepted numbers in [top - size + 1, top], bit i = top - i, as hex (little-endian 32-bit words). */
  bitmap: string;
  size: number;
}
