// AES-GCM for the ESP engine in the native shim: one OpenSSL cipher context
// per SA key, set up once, then only the cipher per packet (Node's own
// OpenSSL; see vswitch.c). The portable fallback is aead-node.ts.

import type { Aead } from '../offload/ipsec/esp.js';
import { native, nativeAvailable, type AeadHandle, type NativeShim } from './native/index.js';

/** An Aead over the native shim; keys are looked up by identity (an EspSa keeps its key array). */
export function createNativeAead(): Aead {
  const shim: NativeShim = native();
  const contexts = new WeakMap<Uint8Array, AeadHandle>();
  const ctx = (key: Uint8Array): AeadHandle => {
    let h = contexts.get(key);
    if (h === undefined) {
      h = shim.aeadNew(key);
      contexts.set(key, h);
    }
    return h;
  };
  return {
    seal(key, nonce, aad, buf, off, len, tagOut, tagOff) {
      shim.aeadSeal(ctx(key), nonce, aad, buf, off, len, tagOut, tagOff);
    },
    open(key, nonce, aad, buf, off, len, tag, tagOff) {
      return shim.aeadOpen(ctx(key), nonce, aad, buf, off, len, tag, tagOff);
    },
  };
}

/** The native AEAD when the shim is built, else null (callers fall back to node:crypto). */
export function nativeAeadIfAvailable(): Aead | null {
  return nativeAvailable() ? createNativeAead() : null;
}
