/**
 * Reader for PyTorch `torch.save` files (the ZIP format of torch ≥ 1.6), without Python:
 *
 * ```
 * <archive>/data.pkl     pickle (protocol 2) of the saved object; each tensor is
 *                        torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …) and each
 *                        storage a persistent id ('storage', torch.FloatStorage, key, location, numel)
 * <archive>/data/<key>   the storage bytes, little-endian
 * <archive>/byteorder    "little" (torch ≥ 2.0; absent before: little)
 * <archive>/version      serialization version
 * ```
 *
 * Supported: a single tensor, or a dict / OrderedDict (e.g. a state_dict) of tensors and plain
 * values; tensors of float32 / float16 / bfloat16 / float64 (read as float32) and integer types,
 * any shape, contiguous or strided, with storage offsets and shared storages. Opening a file
 * parses only its pickle (through the restricted interpreter of ./pickle.ts, which refuses every
 * Python object but these); tensor data is read on demand and CRC-checked. The legacy pre-1.6
 * format, TorchScript archives, and files that are not torch.save output are refused with a
 * MonobenchError naming the file and how to re-save it.
 */
import { f16ToF32Array } from "../data/f16.ts";
import { check, MonobenchError } from "../util/errors.ts";
import { PyDict, type PyGlobal, PyObject, PyTuple, type PyValue, unpickle } from "./pickle.ts";
import { crc32, type ZipEntry, ZipReader } from "./zip.ts";

export type PtDType =
  | "float32"
  | "float16"
  | "bfloat16"
  | "float64"
  | "int64"
  | "int32"
  | "int16"
  | "int8"
  | "uint8"
  | "bool";

const STORAGE_TYPES: Record<string, { dtype: PtDType; bytes: number }> = {
  FloatStorage: { dtype: "float32", bytes: 4 },
  HalfStorage: { dtype: "float16", bytes: 2 },
  BFloat16Storage: { dtype: "bfloat16", bytes: 2 },
  DoubleStorage: { dtype: "float64", bytes: 8 },
  LongStorage: { dtype: "int64", bytes: 8 },
  IntStorage: { dtype: "int32", bytes: 4 },
  ShortStorage: { dtype: "int16", bytes: 2 },
  CharStorage: { dtype: "int8", bytes: 1 },
  ByteStorage: { dtype: "uint8", bytes: 1 },
  BoolStorage: { dtype: "bool", bytes: 1 },
};

const FLOAT_DTYPES: readonly PtDType[] = ["float32", "float16", "bfloat16", "float64"];

/** A tensor of a torch.save file, not read yet. */
export interface PtTensor {
  /** The file it lives in. */
  path: string;
  /** Where it sits in the saved object ("" for a file holding one tensor, else the dict key). */
  key: string;
  dtype: PtDType;
  shape: number[];
  /** In elements. */
  stride: number[];
  /** Storage offset in elements. */
  offset: number;
  storage: { key: string; entry: ZipEntry; numel: number; bytes: number };
}

/** The parsed object of a torch.save file: tensors are {@link PyObject}s of kind "tensor". */
export interface PtFile {
  path: string;
  /** Top folder of the archive (torch uses the file's stem, or "archive"). */
  archive: string;
  /** Serialization version record ("3" for torch 1.13 and 2.x), null if absent. */
  version: string | null;
  root: PyValue;
}

/** The PtTensor of a parsed value, or null. */
export function asTensor(v: PyValue): PtTensor | null {
  return v instanceof PyObject && v.kind === "tensor" ? v.value as PtTensor : null;
}

/** "name [64, 8] float32" for messages. */
export function describeTensor(t: PtTensor): string {
  const where = t.key ? `${t.path} [${t.key}]` : t.path;
  return `${where}: tensor of shape [${t.shape.join(", ")}] ${t.dtype}`;
}

const LEGACY_MAGIC = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const RESAVE = "load it in Python and save it again with torch.save(obj, path) (torch ≥ 1.6 writes the " +
  "ZIP format), or numpy.save(path, tensor.float().numpy()) and give the .npy";

async function sniff(path: string): Promise<Uint8Array> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`file not found: ${path}`);
    throw new MonobenchError(`cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    const head = new Uint8Array(16);
    let got = 0;
    while (got < head.length) {
      const k = await f.read(head.subarray(got));
      if (k === null) break;
      got += k;
    }
    return head.subarray(0, got);
  } finally {
    f.close();
  }
}

function refuseNonZip(path: string, head: Uint8Array): never {
  if (head.length === 0) throw new MonobenchError(`${path}: empty file`);
  if (LEGACY_MAGIC.every((b, i) => head[i] === b)) {
    throw new MonobenchError(
      `${path}: legacy (pre-1.6, non-ZIP) torch.save format is not supported`,
      "in Python: torch.save(torch.load(path), path) (torch ≥ 1.6 writes the ZIP format), or " +
        "numpy.save(path, tensor.float().numpy()) and give the .npy",
    );
  }
  if (head[0] === 0x93 && String.fromCharCode(...head.subarray(1, 6)) === "NUMPY") {
    throw new MonobenchError(
      `${path}: this is a NumPy .npy file, not a torch.save file`,
      "rename it to .npy",
    );
  }
  if (head.length >= 9 && head[8] === 0x7b && head.subarray(4, 8).every((b) => b === 0)) {
    throw new MonobenchError(`${path}: this looks like a safetensors file, not a torch.save file`);
  }
  if (head[0] === 0x80) {
    throw new MonobenchError(`${path}: a plain Python pickle, not a torch.save file`, RESAVE);
  }
  throw new MonobenchError(`${path}: not a torch.save file (no ZIP signature)`, RESAVE);
}

function int(v: PyValue, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    throw new MonobenchError(`${what} is not an integer`);
  }
  return v;
}

function intTuple(v: PyValue, what: string): number[] {
  if (!(v instanceof PyTuple)) throw new MonobenchError(`${what} is not a tuple`);
  return v.items.map((x, i) => int(x, `${what}[${i}]`));
}

/**
 * Open a torch.save file and parse its object (tensor data is not read). Throws MonobenchError
 * for anything that is not a ZIP-format torch.save file of tensors and plain values.
 */
export async function openPt(path: string): Promise<PtFile> {
  const head = await sniff(path);
  if (!(head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04)) {
    refuseNonZip(path, head);
  }
  const zip = await ZipReader.open(path);
  try {
    const names = [...zip.entries.keys()];
    if (names.some((n) => /^[^/]+\/(constants\.pkl|code\/)/.test(n))) {
      throw new MonobenchError(
        `${path}: a TorchScript archive (torch.jit.save), not torch.save output`,
        "save the tensors themselves: torch.save(module.state_dict(), path) or torch.save(tensor, path)",
      );
    }
    const pkl = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pkl.length !== 1) {
      throw new MonobenchError(
        `${path}: a ZIP archive without ${
          pkl.length ? "a unique" : "a"
        } <name>/data.pkl record: not a torch.save file`,
        RESAVE,
      );
    }
    const archive = pkl[0].slice(0, -"/data.pkl".length);
    if (names.some((n) => !n.startsWith(`${archive}/`))) {
      throw new MonobenchError(
        `${path}: records outside the archive folder ${archive}/: not a torch.save file`,
      );
    }
    const text = async (name: string) => {
      const e = zip.entries.get(`${archive}/${name}`);
      return e ? new TextDecoder().decode(await zip.read(e)).trim() : null;
    };
    const byteorder = await text("byteorder");
    if (byteorder !== null && byteorder !== "little") {
      throw new MonobenchError(
        `${path}: byteorder "${byteorder}": only little-endian torch.save files are supported`,
        "re-save the file on a little-endian machine (x86, ARM)",
      );
    }
    const version = await text("version");
    const pklEntry = zip.entries.get(pkl[0])!;
    // The pickle only describes the tensors; their data lives in other records.
    if (pklEntry.size > 256 << 20) {
      throw new MonobenchError(`${path}: implausibly large data.pkl (corrupt file?)`);
    }
    const data = await zip.read(pklEntry);
    const root = parsePickle(data, path, archive, zip.entries);
    return { path, archive, version, root };
  } finally {
    zip.close();
  }
}

function parsePickle(
  data: Uint8Array,
  path: string,
  archive: string,
  entries: Map<string, ZipEntry>,
): PyValue {
  const what = `${path} (data.pkl)`;
  const storages = new Map<string, PtTensor["storage"] & { dtype: PtDType }>();
  let tensorCount = 0;
  const rebuild = (args: PyValue[]): PyValue => {
    check(args.length >= 4, `${what}: _rebuild_tensor_v2 with ${args.length} arguments`);
    const st = args[0];
    if (!(st instanceof PyObject) || st.kind !== "storage") {
      throw new MonobenchError(`${what}: a tensor without a storage`);
    }
    const s = st.value as PtTensor["storage"] & { dtype: PtDType };
    const offset = int(args[1], `${what}: storage offset`);
    const shape = intTuple(args[2], `${what}: tensor size`);
    const stride = intTuple(args[3], `${what}: tensor stride`);
    check(shape.length === stride.length, `${what}: tensor size and stride differ in length`);
    check(shape.every((x) => x >= 0) && stride.every((x) => x >= 0) && offset >= 0, `${what}: negative size`);
    const numel = shape.reduce((a, b) => a * b, 1);
    if (numel > 0) {
      const last = offset + shape.reduce((a, n, i) => a + (n - 1) * stride[i], 0);
      if (last >= s.numel) {
        throw new MonobenchError(
          `${what}: a tensor of shape [${shape}] reaches element ${last} of a storage with ${s.numel} (corrupt file)`,
        );
      }
    }
    tensorCount++;
    const t: PtTensor = { path, key: "", dtype: s.dtype, shape, stride, offset, storage: s };
    return new PyObject("tensor", t);
  };
  const globals: Record<string, PyGlobal> = {
    "torch._utils._rebuild_tensor_v2": { call: rebuild },
    "torch._utils._rebuild_tensor": { call: rebuild },
    "torch._utils._rebuild_parameter": {
      call: (a) => {
        check(asTensor(a[0]) !== null, `${what}: a Parameter without a tensor`);
        return a[0];
      },
    },
    "torch._utils._rebuild_parameter_with_state": {
      call: (a) => {
        check(asTensor(a[0]) !== null, `${what}: a Parameter without a tensor`);
        return a[0];
      },
    },
    "collections.OrderedDict": {
      call: (a) => {
        const d = new PyDict(true);
        if (a.length && Array.isArray(a[0])) {
          for (const kv of a[0]) {
            if (!(kv instanceof PyTuple) || kv.items.length !== 2) {
              throw new MonobenchError(`${what}: bad OrderedDict`);
            }
            const k = kv.items[0];
            if (typeof k !== "string" && typeof k !== "number") {
              throw new MonobenchError(`${what}: bad dict key`);
            }
            d.map.set(k, kv.items[1]);
          }
        }
        return d;
      },
    },
  };
  for (const name of Object.keys(STORAGE_TYPES)) globals[`torch.${name}`] = {};
  return unpickle(data, {
    what,
    globals,
    persistentLoad: (pid) => {
      if (!(pid instanceof PyTuple) || pid.items[0] !== "storage" || pid.items.length < 5) {
        throw new MonobenchError(`${what}: unknown persistent id (not a tensor storage)`);
      }
      const [, type, key, , numelV] = pid.items;
      const typeName = type instanceof PyObject && type.kind === "global" ? String(type.value) : "";
      const info = STORAGE_TYPES[typeName.replace(/^torch\./, "")];
      if (!info) throw new MonobenchError(`${what}: unsupported storage type ${typeName || String(type)}`);
      check(typeof key === "string", `${what}: storage key is not a string`);
      const numel = int(numelV, `${what}: storage size`);
      const cached = storages.get(key);
      if (cached) return new PyObject("storage", cached);
      const entry = entries.get(`${archive}/data/${key}`);
      if (!entry) throw new MonobenchError(`${path}: storage record data/${key} is missing (corrupt file)`);
      if (entry.size !== numel * info.bytes) {
        throw new MonobenchError(
          `${path}: storage data/${key} has ${entry.size} bytes, expected ${numel} × ${info.bytes} (corrupt file)`,
        );
      }
      const s = { key, entry, numel, bytes: info.bytes, dtype: info.dtype };
      storages.set(key, s);
      return new PyObject("storage", s);
    },
    // OrderedDict state (a state_dict's _metadata) carries no tensors: keep the dict.
    build: (obj, state) => {
      if (obj instanceof PyDict && (state instanceof PyDict || state === null)) return obj;
      throw new MonobenchError(`${what}: unsupported object state (BUILD)`);
    },
  });
}

/**
 * The tensors of a parsed file: `{"": t}` for a single tensor, the entries of a dict of tensors
 * (nested dicts give dotted keys). Non-tensor values are returned in `other`.
 */
export function ptEntries(f: PtFile): { tensors: Map<string, PtTensor>; other: Map<string, PyValue> } {
  const tensors = new Map<string, PtTensor>(), other = new Map<string, PyValue>();
  const walk = (v: PyValue, key: string) => {
    const t = asTensor(v);
    if (t) tensors.set(key, { ...t, key });
    else if (v instanceof PyDict) { for (const [k, x] of v.map) walk(x, key ? `${key}.${k}` : String(k)); }
    else other.set(key, v);
  };
  walk(f.root, "");
  return { tensors, other };
}

function isContiguous(t: PtTensor): boolean {
  let expect = 1;
  for (let i = t.shape.length - 1; i >= 0; i--) {
    if (t.shape[i] !== 1 && t.stride[i] !== expect) return false;
    expect *= t.shape[i];
  }
  return true;
}

function numelOf(t: PtTensor): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

/** Convert `count` elements of `dtype` in `bytes` to float32 into `out` at `at`. */
function decodeFloats(
  dtype: PtDType,
  bytes: Uint8Array,
  out: Float32Array,
  at: number,
  t: PtTensor,
  first: number,
) {
  const n = bytes.length / STORAGE_BYTES[dtype];
  const buf = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  if (dtype === "float32") out.set(new Float32Array(buf.buffer, buf.byteOffset, n), at);
  else if (dtype === "float16") {
    f16ToF32Array(
      new Uint16Array(buf.buffer, buf.byteOffset, n),
      out.subarray(at, at + n) as Float32Array<ArrayBuffer>,
    );
  } else if (dtype === "bfloat16") {
    const h = new Uint16Array(buf.buffer, buf.byteOffset, n);
    const u = new Uint32Array(out.buffer, out.byteOffset + at * 4, n);
    for (let i = 0; i < n; i++) u[i] = h[i] << 16;
  } else if (dtype === "float64") {
    const d = new Float64Array(buf.buffer, buf.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const r = Math.fround(d[i]);
      if (Number.isFinite(d[i]) && !Number.isFinite(r)) {
        throw new MonobenchError(
          `${describeTensor(t)}: float64 value ${d[i]} at element ${first + i} is beyond the float32 range`,
        );
      }
      out[at + i] = r;
    }
  } else throw new MonobenchError(`internal: decodeFloats(${dtype})`);
}

const STORAGE_BYTES: Record<PtDType, number> = Object.fromEntries(
  Object.values(STORAGE_TYPES).map((s) => [s.dtype, s.bytes]),
) as Record<PtDType, number>;

function requireFloat(t: PtTensor): void {
  if (!FLOAT_DTYPES.includes(t.dtype)) {
    throw new MonobenchError(
      `${describeTensor(t)}: expected a floating-point tensor (float32, float16, bfloat16, float64)`,
      "convert with tensor.float() before torch.save",
    );
  }
}

function where(t: PtTensor, i: number): string {
  if (t.shape.length === 2) return `row ${Math.floor(i / t.shape[1])}, column ${i % t.shape[1]}`;
  return `element ${i}`;
}

function checkFinite(t: PtTensor, out: Float32Array, first: number): void {
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) {
      throw new MonobenchError(
        `${describeTensor(t)}: non-finite value ${out[i]} at ${where(t, first + i)}`,
        "NaN/Inf cannot be measured or stored: fix or drop those samples",
      );
    }
  }
}

async function withZip<T>(path: string, fn: (z: ZipReader) => Promise<T>): Promise<T> {
  const z = await ZipReader.open(path);
  try {
    return await fn(z);
  } finally {
    z.close();
  }
}

async function storageBytes(z: ZipReader, t: PtTensor): Promise<Uint8Array> {
  const e = z.entries.get(t.storage.entry.name);
  if (!e || e.size !== t.storage.entry.size || e.crc32 !== t.storage.entry.crc32) {
    throw new MonobenchError(`${t.path}: the file changed since it was opened`);
  }
  return await z.read(e);
}

/** Gather the elements of a strided tensor (row-major order) from its whole storage. */
function gather(t: PtTensor, storage: Uint8Array): Uint8Array {
  const b = t.storage.bytes, n = numelOf(t), nd = t.shape.length;
  const out = new Uint8Array(n * b);
  const idx = new Array(nd).fill(0);
  let src = t.offset;
  for (let i = 0; i < n; i++) {
    out.set(storage.subarray(src * b, src * b + b), i * b);
    for (let ax = nd - 1; ax >= 0; ax--) {
      idx[ax]++;
      src += t.stride[ax];
      if (idx[ax] < t.shape[ax]) break;
      src -= t.stride[ax] * t.shape[ax];
      idx[ax] = 0;
    }
  }
  return out;
}

/** The tensor's elements in row-major order as raw little-endian bytes. */
async function elementBytes(t: PtTensor): Promise<Uint8Array> {
  return await withZip(t.path, async (z) => {
    const storage = await storageBytes(z, t);
    if (isContiguous(t)) {
      return storage.subarray(t.offset * t.storage.bytes, (t.offset + numelOf(t)) * t.storage.bytes);
    }
    return gather(t, storage);
  });
}

/** Read a floating-point tensor as float32 (row-major); NaN/Inf throw a MonobenchError. */
export async function readPtFloat(t: PtTensor): Promise<Float32Array> {
  requireFloat(t);
  const bytes = await elementBytes(t);
  const out = new Float32Array(numelOf(t));
  decodeFloats(t.dtype, bytes, out, 0, t, 0);
  checkFinite(t, out, 0);
  return out;
}

/** Read an integer (or bool) tensor as numbers (row-major). */
export async function readPtInts(t: PtTensor): Promise<number[]> {
  if (FLOAT_DTYPES.includes(t.dtype)) {
    throw new MonobenchError(`${describeTensor(t)}: expected an integer tensor`);
  }
  const raw = await elementBytes(t);
  const bytes = raw.slice();
  const n = numelOf(t);
  const out: number[] = [];
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i < n; i++) {
    switch (t.dtype) {
      case "int64": {
        const v = dv.getBigInt64(8 * i, true);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
          throw new MonobenchError(`${describeTensor(t)}: value ${v} at element ${i} is too large`);
        }
        out.push(Number(v));
        break;
      }
      case "int32":
        out.push(dv.getInt32(4 * i, true));
        break;
      case "int16":
        out.push(dv.getInt16(2 * i, true));
        break;
      case "int8":
        out.push(dv.getInt8(i));
        break;
      default:
        out.push(dv.getUint8(i));
    }
  }
  return out;
}

/** A 2-D floating-point tensor as an [N, D] matrix (with messages like the .npy reader's). */
export function ptMatrix(f: PtFile): PtTensor {
  const t = asTensor(f.root);
  if (!t) {
    const keys = f.root instanceof PyDict ? [...f.root.map.keys()].slice(0, 8).map(String) : [];
    throw new MonobenchError(
      `${f.path}: expected a single tensor [N, D], found ${
        f.root instanceof PyDict ? `a dict (keys: ${keys.join(", ")})` : "another Python object"
      }`,
      "save the activations themselves: torch.save(tensor, path), one [N, D] tensor per file",
    );
  }
  requireFloat(t);
  if (t.shape.length !== 2) {
    throw new MonobenchError(
      `${describeTensor(t)}: expected a 2-D tensor [N, D] (one row per sample)`,
      t.shape.length === 1
        ? "save a single feature as tensor.reshape(-1, 1)"
        : "select one token (e.g. the CLS token, tensor[:, 0]) or pool, so that each sample is one row",
    );
  }
  if (t.shape[0] === 0 || t.shape[1] === 0) throw new MonobenchError(`${describeTensor(t)}: empty tensor`);
  return t;
}

/**
 * Stream the rows of a 2-D floating-point tensor as float32 in blocks of at most `maxRows`:
 * `sink(rows, first, count)` (the buffer is reused between calls). A contiguous tensor that is
 * its whole storage is read block by block (CRC checked at the end); anything else is read
 * whole first. NaN/Inf throw a MonobenchError naming the row and column.
 */
export async function streamPtRows(
  t: PtTensor,
  maxRows: number,
  sink: (rows: Float32Array, first: number, count: number) => Promise<void>,
): Promise<void> {
  requireFloat(t);
  check(t.shape.length === 2, `internal: streamPtRows on a ${t.shape.length}-D tensor`);
  const [n, d] = t.shape;
  const block = Math.max(1, Math.min(maxRows, n));
  const out = new Float32Array(block * d);
  const b = t.storage.bytes;
  const whole = isContiguous(t) && t.offset === 0 && n * d === t.storage.numel &&
    t.storage.entry.method === 0;
  await withZip(t.path, async (z) => {
    const e = z.entries.get(t.storage.entry.name);
    if (!e || e.size !== t.storage.entry.size || e.crc32 !== t.storage.entry.crc32) {
      throw new MonobenchError(`${t.path}: the file changed since it was opened`);
    }
    let all: Uint8Array | null = null;
    if (!whole) {
      const s = await z.read(e);
      all = isContiguous(t) ? s.subarray(t.offset * b, (t.offset + n * d) * b) : gather(t, s);
    }
    const buf = whole ? new Uint8Array(block * d * b) : null;
    let crc = 0;
    for (let r = 0; r < n; r += block) {
      const cnt = Math.min(block, n - r);
      let bytes: Uint8Array;
      if (buf) {
        bytes = buf.subarray(0, cnt * d * b);
        await z.readRange(e, r * d * b, bytes);
        crc = crc32(bytes, crc);
        if (r + cnt === n && crc !== e.crc32) {
          throw new MonobenchError(`${t.path}: ZIP entry ${e.name} fails its CRC-32 check (corrupt file)`);
        }
      } else bytes = all!.subarray(r * d * b, (r + cnt) * d * b);
      const rows = out.subarray(0, cnt * d);
      decodeFloats(t.dtype, bytes, rows, 0, t, r * d);
      checkFinite(t, rows, r * d);
      await sink(rows, r, cnt);
    }
  });
}
