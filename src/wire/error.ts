// Why a run of bytes is not a valid header. Parsers return one of these
// (or null for "valid"); they never throw and never read past the bytes they
// were given. Each reason is also the name of a drop counter.
export type WireError =
  | 'truncated'          // fewer bytes than the header (or a length field) needs
  | 'bad-length'         // a length field is inconsistent with itself or the buffer
  | 'bad-header-length'  // IPv4 IHL / TCP data offset below the minimum
  | 'bad-version'        // IP version nibble is not what the view expects
  | 'bad-option'         // a malformed option (IPv4, TCP, IPv6 extension header)
  | 'bad-type'           // a type/flags field holds a value the format forbids
  | 'too-many-tags'      // more VLAN tags than we walk
  | 'unsupported';       // well formed, but a kind this parser does not handle
                         // (also: more IPv6 extension headers than we walk)

/** Shared empty buffer for views that are not bound yet. */
export const EMPTY = new Uint8Array(0);
