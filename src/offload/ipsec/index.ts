// IPsec offload: security associations, ESP (AES-GCM) and the anti-replay window.
export * from './sa.js';
export * from './replay.js';
export * from './esp.js';
