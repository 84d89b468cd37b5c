/** Hashing helpers for content-addressed caches. */
import { createHash } from "node:crypto";

/** Incremental SHA-256 (hex digest). */
export class Sha256 {
  private h = createHash("sha256");
  update(data: string | Uint8Array | ArrayBufferView): this {
    if (typeof data === "string") this.h.update(data, "utf8");
    else this.h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return this;
  }
  hex(): string {
    return this.h.digest("hex");
  }
}

/** SHA-256 hex digest of a string or bytes. */
export function sha256Hex(data: string | Uint8Array | ArrayBufferView): string {
  return new Sha256().update(data).hex();
}

/**
 * JSON with object keys sorted recursively, so that equal values give equal strings
 * (`undefined` members are dropped, as JSON.stringify does).
 */
export function stableStringify(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v !== null && typeof v === "object" && !ArrayBuffer.isView(v)) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v as Record<string, unknown>).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined) out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}

/** Short (16 hex chars) hash of a JSON-able key, for cache directory names. */
export function keyHash(key: unknown): string {
  return sha256Hex(stableStringify(key)).slice(0, 16);
}
