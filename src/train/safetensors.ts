/**
 * Minimal safetensors reader/writer (https://github.com/huggingface/safetensors format):
 * 8-byte little-endian header length N, N bytes of JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`,
 * then the raw little-endian tensor bytes (offsets relative to the end of the header).
 *
 * Reading validates everything (header length, JSON, dtypes, shapes, offsets inside the buffer,
 * byte counts matching the shapes, no overlaps or holes) and throws MonobenchError.
 */
import { check, MonobenchError } from "../util/errors.ts";

/** Element types supported on read. F16/BF16 are widened to Float32Array on read. */
export type StDType = "F32" | "F64" | "F16" | "BF16" | "I32" | "U32" | "I64" | "U8" | "I8";

const BYTES: Record<StDType, number> = {
  F32: 4,
  F64: 8,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  I64: 8,
  U8: 1,
  I8: 1,
};

export type StData =
  | Float32Array
  | Float64Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | Uint8Array
  | Int8Array;

export interface StTensor {
  /** dtype as stored in the file. */
  dtype: StDType;
  shape: number[];
  /** F16/BF16 data is widened to Float32Array. */
  data: StData;
}

export interface StFile {
  tensors: Record<string, StTensor>;
  metadata: Record<string, string>;
}

/** Largest header we accept (the reference implementation uses 100 MB). */
const MAX_HEADER = 100_000_000;

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("safetensors.ts assumes a little-endian platform");
}

function dtypeOf(a: StData): StDType {
  if (a instanceof Float32Array) return "F32";
  if (a instanceof Float64Array) return "F64";
  if (a instanceof Int32Array) return "I32";
  if (a instanceof Uint32Array) return "U32";
  if (a instanceof BigInt64Array) return "I64";
  if (a instanceof Int8Array) return "I8";
  return "U8";
}

/** Serialise tensors (written in the order given) and optional string metadata. */
export function encodeSafetensors(
  tensors: Record<string, { shape: number[]; data: StData }>,
  metadata: Record<string, string> = {},
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  const parts: { data: StData; off: number }[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    check(name !== "__metadata__", "safetensors: tensor name __metadata__ is reserved");
    const n = t.shape.reduce((a, b) => a * b, 1);
    check(
      t.shape.every((s) => Number.isInteger(s) && s >= 0) && n === t.data.length,
      `safetensors: tensor ${name} has ${t.data.length} elements but shape [${t.shape}]`,
    );
    const dtype = dtypeOf(t.data);
    const bytes = n * BYTES[dtype];
    header[name] = { dtype, shape: t.shape, data_offsets: [off, off + bytes] };
    parts.push({ data: t.data, off });
    off += bytes;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so that the data starts 8-byte aligned (as the reference writer does).
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  const pad = (8 - (hb.length % 8)) % 8;
  if (pad) {
    json += " ".repeat(pad);
    hb = enc.encode(json);
  }
  const out = new Uint8Array(8 + hb.length + off);
  new DataView(out.buffer).setBigUint64(0, BigInt(hb.length), true);
  out.set(hb, 8);
  const base = 8 + hb.length;
  for (const p of parts) {
    out.set(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength), base + p.off);
  }
  return out;
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Parse and validate a safetensors buffer. `what` names the source in error messages. */
export function decodeSafetensors(bytes: Uint8Array, what = "safetensors file"): StFile {
  const bad = (msg: string) => new MonobenchError(`${what}: malformed safetensors (${msg})`);
  if (bytes.length < 8) throw bad(`only ${bytes.length} bytes`);
  const hlen = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (hlen > BigInt(Math.min(MAX_HEADER, bytes.length - 8))) {
    throw bad(`header length ${hlen} exceeds the file size ${bytes.length}`);
  }
  const n = Number(hlen);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw bad(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw bad("header is not an object");
  }
  const base = 8 + n;
  const dataLen = bytes.length - base;
  const tensors: Record<string, StTensor> = {};
  let metadata: Record<string, string> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        throw bad("__metadata__ is not an object");
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") throw bad(`metadata ${k} is not a string`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== "object" || raw === null) throw bad(`entry ${name} is not an object`);
    const { dtype, shape, data_offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in BYTES)) {
      throw bad(`tensor ${name}: unsupported dtype ${dtype}`);
    }
    if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && s >= 0)) {
      throw bad(`tensor ${name}: bad shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(data_offsets) || data_offsets.length !== 2 ||
      !data_offsets.every((s) => Number.isSafeInteger(s) && s >= 0)
    ) {
      throw bad(`tensor ${name}: bad data_offsets ${JSON.stringify(data_offsets)}`);
    }
    const [b, e] = data_offsets as number[];
    const dt = dtype as StDType;
    const count = (shape as number[]).reduce((a, c) => a * c, 1);
    if (e < b || e > dataLen) {
      throw bad(`tensor ${name}: data_offsets [${b}, ${e}] outside the ${dataLen} data bytes`);
    }
    if (e - b !== count * BYTES[dt]) {
      throw bad(`tensor ${name}: ${e - b} bytes for shape [${shape}] of ${dt} (needs ${count * BYTES[dt]})`);
    }
    ranges.push([b, e, name]);
    // Copy into a fresh (aligned) buffer.
    const buf = bytes.slice(base + b, base + e).buffer;
    let data: StData;
    switch (dt) {
      case "F32":
        data = new Float32Array(buf);
        break;
      case "F64":
        data = new Float64Array(buf);
        break;
      case "I32":
        data = new Int32Array(buf);
        break;
      case "U32":
        data = new Uint32Array(buf);
        break;
      case "I64":
        data = new BigInt64Array(buf);
        break;
      case "U8":
        data = new Uint8Array(buf);
        break;
      case "I8":
        data = new Int8Array(buf);
        break;
      case "F16": {
        const h = new Uint16Array(buf);
        data = new Float32Array(h.length);
        for (let i = 0; i < h.length; i++) data[i] = f16ToF32(h[i]);
        break;
      }
      case "BF16": {
        const h = new Uint16Array(buf);
        const u = new Uint32Array(h.length);
        for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
        data = new Float32Array(u.buffer);
        break;
      }
    }
    tensors[name] = { dtype: dt, shape: shape as number[], data };
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let pos = 0;
  for (const [b, e, name] of ranges) {
    if (b < pos) throw bad(`tensor ${name} overlaps another tensor`);
    if (b > pos) throw bad(`hole in the data before tensor ${name}`);
    pos = e;
  }
  if (pos !== dataLen) throw bad(`${dataLen - pos} trailing bytes after the last tensor`);
  return { tensors, metadata };
}

/** Read and validate a safetensors file (missing file → MonobenchError). */
export async function readSafetensors(path: string): Promise<StFile> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`missing file ${path}`);
    throw e;
  }
  return decodeSafetensors(bytes, path);
}

/** Write a safetensors file atomically (temp file + rename). */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, { shape: number[]; data: StData }>,
  metadata: Record<string, string> = {},
): Promise<void> {
  const tmp = `${path}.${Deno.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await Deno.writeFile(tmp, encodeSafetensors(tensors, metadata));
  await Deno.rename(tmp, path);
}

/** Fetch a tensor by name, checking dtype and shape; throws MonobenchError naming `what`. */
export function getTensor<T extends StData>(
  file: StFile,
  name: string,
  shape: number[],
  what: string,
  dtype: StDType = "F32",
): T {
  const t = file.tensors[name];
  if (!t) throw new MonobenchError(`${what}: tensor ${name} is missing`);
  const widened = dtype === "F32" && (t.dtype === "F16" || t.dtype === "BF16");
  if (t.dtype !== dtype && !widened) {
    throw new MonobenchError(`${what}: tensor ${name} has dtype ${t.dtype}, expected ${dtype}`);
  }
  if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) {
    throw new MonobenchError(
      `${what}: tensor ${name} has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`,
    );
  }
  return t.data as T;
}
