/**
 * Reader for NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), limited to what activation
 * stores hold: a 2-D [N, D] array of little-endian float32 (`<f4`), float16 (`<f2`) or float64
 * (`<f8`, rounded to float32) in C or Fortran order. Everything else is refused with a
 * MonobenchError naming the file and the problem.
 *
 * Layout (numpy `lib/format.py`):
 * ```
 * "\x93NUMPY" major minor             6 + 2 bytes
 * HEADER_LEN                          uint16 LE (v1.0) or uint32 LE (v2.0, v3.0)
 * HEADER                              Python dict literal, latin-1 (v1, v2) or UTF-8 (v3), e.g.
 *                                     {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
 *                                     padded with spaces and ended by '\n'
 * DATA                                prod(shape) · itemsize bytes, nothing after
 * ```
 * Data is read straight from the file in chunks into the caller's Float32Array, so a file is
 * never held twice in memory.
 */
import { check, MonobenchError } from "../util/errors.ts";
import { f16ToF32Array } from "../data/f16.ts";

/** The supported dtypes (`descr` strings). */
export type NpyDescr = "<f4" | "<f2" | "<f8";

export const NPY_DESCRS: readonly NpyDescr[] = ["<f4", "<f2", "<f8"];

const ITEMSIZE: Record<NpyDescr, number> = { "<f4": 4, "<f2": 2, "<f8": 8 };

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** Largest header this reader accepts (numpy writes < 100 bytes for 2-D arrays). */
const MAX_HEADER = 1 << 20;

/** Default chunk size of {@link readNpyInto} (bytes of file data per read). */
export const DEFAULT_CHUNK_BYTES = 8 << 20;

/** A parsed and validated header. */
export interface NpyInfo {
  /** Where the data comes from (file path, used in messages). */
  what: string;
  /** "1.0", "2.0" or "3.0" ("raw" for headerless float32 files, see {@link rawInfo}). */
  version: string;
  descr: NpyDescr;
  fortran: boolean;
  /** [N, D]. */
  shape: [number, number];
  /** Byte offset of the data in the file. */
  dataOffset: number;
  /** Bytes of data: N · D · itemsize. */
  dataBytes: number;
}

function fail(what: string, problem: string, hint?: string): never {
  throw new MonobenchError(`${what}: ${problem}`, hint);
}

// ---------------------------------------------------------------------------------------------
// Python literal parser (the subset numpy writes: dict, tuple, list, str, int, True/False/None).

type PyValue = string | number | boolean | null | PyValue[] | { tuple: PyValue[] } | Map<string, PyValue>;

class PyParser {
  private i = 0;
  constructor(private readonly s: string, private readonly what: string) {}

  private bad(msg: string): never {
    fail(
      this.what,
      `malformed .npy header (${msg} at character ${this.i}): ${JSON.stringify(this.s.trim())}`,
    );
  }

  private ws(): void {
    while (this.i < this.s.length && /\s/.test(this.s[this.i])) this.i++;
  }

  parseAll(): PyValue {
    const v = this.value();
    this.ws();
    if (this.i !== this.s.length) this.bad("unexpected text after the dictionary");
    return v;
  }

  private value(): PyValue {
    this.ws();
    const c = this.s[this.i];
    if (c === "{") return this.dict();
    if (c === "(") return { tuple: this.seq("(", ")") };
    if (c === "[") return this.seq("[", "]");
    if (c === "'" || c === '"') return this.str();
    const m = /^(-?\d+)L?|^True\b|^False\b|^None\b/.exec(this.s.slice(this.i));
    if (!m) this.bad("unexpected token");
    this.i += m[0].length;
    if (m[0] === "True") return true;
    if (m[0] === "False") return false;
    if (m[0] === "None") return null;
    return Number(m[1]);
  }

  private str(): string {
    const q = this.s[this.i++];
    let out = "";
    while (this.i < this.s.length && this.s[this.i] !== q) {
      if (this.s[this.i] === "\\") this.i++;
      out += this.s[this.i++] ?? "";
    }
    if (this.s[this.i] !== q) this.bad("unterminated string");
    this.i++;
    return out;
  }

  private seq(open: string, close: string): PyValue[] {
    check(this.s[this.i] === open, "internal: seq");
    this.i++;
    const items: PyValue[] = [];
    for (;;) {
      this.ws();
      if (this.s[this.i] === close) break;
      items.push(this.value());
      this.ws();
      if (this.s[this.i] === ",") this.i++;
      else if (this.s[this.i] !== close) this.bad(`expected "," or "${close}"`);
    }
    this.i++;
    return items;
  }

  private dict(): Map<string, PyValue> {
    this.i++;
    const m = new Map<string, PyValue>();
    for (;;) {
      this.ws();
      if (this.s[this.i] === "}") break;
      const c = this.s[this.i];
      if (c !== "'" && c !== '"') this.bad("expected a string key");
      const k = this.str();
      this.ws();
      if (this.s[this.i] !== ":") this.bad('expected ":"');
      this.i++;
      if (m.has(k)) this.bad(`duplicate key '${k}'`);
      m.set(k, this.value());
      this.ws();
      if (this.s[this.i] === ",") this.i++;
      else if (this.s[this.i] !== "}") this.bad('expected "," or "}"');
    }
    this.i++;
    return m;
  }
}

function describeDescr(descr: unknown): string {
  if (typeof descr !== "string") return "a structured (record) dtype";
  const m = /^([<>|=]?)([a-zA-Z])(\d*)$/.exec(descr);
  if (!m) return `dtype '${descr}'`;
  const [, order, kind, size] = m;
  const kinds: Record<string, string> = {
    f: "float",
    i: "int",
    u: "uint",
    b: "bool",
    c: "complex",
    O: "object",
    U: "unicode string",
    S: "byte string",
    V: "void",
    M: "datetime",
    m: "timedelta",
  };
  const bits = size ? Number(size) * (kind === "U" ? 32 : 8) : 0;
  const name = `${kinds[kind] ?? kind}${bits && !"USV".includes(kind) ? bits : ""}`;
  return `dtype '${descr}' (${order === ">" ? "big-endian " : ""}${name})`;
}

/**
 * Parse the header at the start of `head` (which must hold at least the whole header) and
 * validate it against `fileSize` (total bytes of the file). Throws MonobenchError naming `what`.
 */
export function parseNpyHeader(head: Uint8Array, fileSize: number, what: string): NpyInfo {
  if (head.length < 10 || MAGIC.some((b, i) => head[i] !== b)) {
    fail(
      what,
      "not a .npy file (missing the \\x93NUMPY magic string)",
      "save arrays with numpy.save(path, array); for raw float32 files give --shape N,D",
    );
  }
  const major = head[6], minor = head[7];
  if (!(major >= 1 && major <= 3) || minor !== 0) {
    fail(what, `unsupported .npy format version ${major}.${minor} (supported: 1.0, 2.0, 3.0)`);
  }
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const lenBytes = major === 1 ? 2 : 4;
  if (head.length < 8 + lenBytes) fail(what, "truncated .npy header");
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = 8 + lenBytes;
  if (hlen > MAX_HEADER) fail(what, `.npy header length ${hlen} is implausibly large (corrupt file?)`);
  if (start + hlen > fileSize || start + hlen > head.length) {
    fail(what, `truncated .npy header: it claims ${hlen} bytes but the file has ${fileSize} bytes in all`);
  }
  const raw = head.subarray(start, start + hlen);
  let text: string;
  if (major === 3) {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      fail(what, "malformed .npy header: not valid UTF-8");
    }
  } else {
    text = String.fromCharCode(...raw); // latin-1
  }
  const parsed = new PyParser(text, what).parseAll();
  if (!(parsed instanceof Map)) fail(what, `malformed .npy header: not a dictionary: ${text.trim()}`);
  const keys = [...parsed.keys()].sort();
  if (keys.join(",") !== "descr,fortran_order,shape") {
    fail(
      what,
      `malformed .npy header: expected the keys 'descr', 'fortran_order', 'shape', got ${
        keys.map((k) => `'${k}'`).join(", ")
      }`,
    );
  }
  const descr = parsed.get("descr");
  const fortran = parsed.get("fortran_order");
  const shapeV = parsed.get("shape");
  if (typeof fortran !== "boolean") fail(what, "malformed .npy header: 'fortran_order' is not True or False");
  if (
    shapeV === null || typeof shapeV !== "object" || !("tuple" in shapeV) ||
    !shapeV.tuple.every((v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0)
  ) {
    fail(what, "malformed .npy header: 'shape' is not a tuple of non-negative integers");
  }
  const shape = shapeV.tuple as number[];
  if (typeof descr !== "string" || !(NPY_DESCRS as readonly string[]).includes(descr)) {
    fail(
      what,
      `unsupported ${describeDescr(descr)}; supported: '<f4' (float32), '<f2' (float16), '<f8' (float64)`,
      "convert with array.astype(numpy.float32) before numpy.save",
    );
  }
  if (shape.length !== 2) {
    fail(
      what,
      `expected a 2-D array [N, D] (one row per sample), got shape (${shape.join(", ")}${
        shape.length === 1 ? "," : ""
      })`,
      shape.length === 1
        ? "save a single feature as array.reshape(-1, 1)"
        : "select one token (e.g. the CLS token, array[:, 0]) or pool, so that each sample is one row",
    );
  }
  const [n, d] = shape;
  if (n === 0 || d === 0) fail(what, `empty array of shape (${n}, ${d})`);
  const itemsize = ITEMSIZE[descr as NpyDescr];
  const dataOffset = start + hlen;
  const dataBytes = n * d * itemsize;
  const have = fileSize - dataOffset;
  if (have < dataBytes) {
    fail(
      what,
      `truncated data: shape (${n}, ${d}) ${descr} needs ${dataBytes} bytes after the header, ` +
        `the file has ${have} (incomplete download or copy?)`,
    );
  }
  if (have > dataBytes) {
    fail(
      what,
      `${have - dataBytes} unexpected bytes after the array data (shape (${n}, ${d}) ${descr} ` +
        `needs ${dataBytes}); was more than one array saved into this file?`,
      "save each array into its own file",
    );
  }
  return {
    what,
    version: `${major}.${minor}`,
    descr: descr as NpyDescr,
    fortran,
    shape: [n, d],
    dataOffset,
    dataBytes,
  };
}

/** Header of the .npy file at `path` (reads only the header; checks the data size). */
export async function readNpyHeader(path: string): Promise<NpyInfo> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new MonobenchError(`cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    const size = (await f.stat()).size;
    const pre = new Uint8Array(Math.min(size, 12));
    await readFull(f, pre, path);
    let head = pre;
    if (size >= 12 && MAGIC.every((b, i) => pre[i] === b) && pre[7] === 0 && pre[6] >= 1 && pre[6] <= 3) {
      const dv = new DataView(pre.buffer);
      const hlen = pre[6] === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
      const total = (pre[6] === 1 ? 10 : 12) + hlen;
      if (hlen <= MAX_HEADER && total <= size) {
        head = new Uint8Array(total);
        head.set(pre);
        await readFull(f, head.subarray(pre.length), path);
      }
    }
    return parseNpyHeader(head, size, path);
  } finally {
    f.close();
  }
}

/** Info for a headerless little-endian float32 file of shape [n, d] (size checked by the caller). */
export function rawInfo(what: string, n: number, d: number): NpyInfo {
  return {
    what,
    version: "raw",
    descr: "<f4",
    fortran: false,
    shape: [n, d],
    dataOffset: 0,
    dataBytes: n * d * 4,
  };
}

async function readFull(f: Deno.FsFile, into: Uint8Array, what: string): Promise<void> {
  let got = 0;
  while (got < into.length) {
    const k = await f.read(into.subarray(got));
    if (k === null) fail(what, "file ended early while reading (was it changed during the import?)");
    got += k;
  }
}

export interface ReadIntoOptions {
  /** Bytes of file data per read (default 8 MiB; tests use small values). */
  chunkBytes?: number;
}

/**
 * Read the data described by `info` from `path` into `out` as float32, row-major, starting at
 * row `rowOffset` of an output with `info.shape[1]` columns. Non-finite values (and float64
 * values beyond the float32 range) throw a MonobenchError naming the file, row and column.
 */
export async function readNpyInto(
  path: string,
  info: NpyInfo,
  out: Float32Array,
  rowOffset: number,
  opts: ReadIntoOptions = {},
): Promise<void> {
  const [n, d] = info.shape;
  const base = rowOffset * d;
  check(base + n * d <= out.length, `readNpyInto: output too small for ${info.what}`);
  const item = ITEMSIZE[info.descr];
  const chunkItems = Math.max(1, Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / item));
  const total = n * d;
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new MonobenchError(`cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    await f.seek(info.dataOffset, Deno.SeekMode.Start);
    const direct = info.descr === "<f4" && !info.fortran;
    const buf = direct ? null : new Uint8Array(Math.min(chunkItems, total) * item);
    const f32 = new Float32Array(buf ? Math.min(chunkItems, total) : 0);
    for (let e0 = 0; e0 < total; e0 += chunkItems) {
      const cnt = Math.min(chunkItems, total - e0);
      if (direct) {
        // float32, C order: read the bytes straight into the output.
        await readFull(f, new Uint8Array(out.buffer, out.byteOffset + (base + e0) * 4, cnt * 4), path);
        continue;
      }
      const bytes = buf!.subarray(0, cnt * item);
      await readFull(f, bytes, path);
      let vals: Float32Array;
      if (info.descr === "<f4") {
        vals = new Float32Array(bytes.buffer, 0, cnt);
      } else if (info.descr === "<f2") {
        vals = f16ToF32Array(new Uint16Array(bytes.buffer, 0, cnt), f32.subarray(0, cnt));
      } else {
        const f64 = new Float64Array(bytes.buffer, 0, cnt);
        vals = f32.subarray(0, cnt);
        for (let i = 0; i < cnt; i++) {
          const v = f64[i];
          const r = Math.fround(v);
          if (Number.isFinite(v) && !Number.isFinite(r)) {
            const e = e0 + i;
            const [row, col] = info.fortran ? [e % n, Math.floor(e / n)] : [Math.floor(e / d), e % d];
            fail(
              path,
              `float64 value ${v} at row ${row}, column ${col} is beyond the float32 range`,
              "rescale the data; activation stores hold float32",
            );
          }
          vals[i] = r;
        }
      }
      if (info.fortran) {
        // Column-major: element e is (row e % n, column ⌊e / n⌋).
        let row = e0 % n, col = Math.floor(e0 / n);
        for (let i = 0; i < cnt; i++) {
          out[base + row * d + col] = vals[i];
          if (++row === n) {
            row = 0;
            col++;
          }
        }
      } else {
        out.set(vals, base + e0);
      }
    }
  } finally {
    f.close();
  }
  checkFiniteRows(out, base, n, d, path);
}

/** Throw a MonobenchError naming the first non-finite value of rows [0, n) at `base`. */
export function checkFiniteRows(out: Float32Array, base: number, n: number, d: number, what: string): void {
  for (let i = 0, e = n * d; i < e; i++) {
    const v = out[base + i];
    if (!Number.isFinite(v)) {
      fail(
        what,
        `non-finite value ${v} at row ${Math.floor(i / d)}, column ${i % d}`,
        "activation stores refuse NaN/Inf: fix or drop those samples (in every split and embedding file alike)",
      );
    }
  }
}

/** Decode a whole in-memory .npy file (for small files and tests): shape [N, D] and float32 data. */
export function decodeNpy(bytes: Uint8Array, what = "npy data"): { info: NpyInfo; data: Float32Array } {
  const info = parseNpyHeader(bytes, bytes.length, what);
  const [n, d] = info.shape;
  const out = new Float32Array(n * d);
  const src = bytes.slice(info.dataOffset, info.dataOffset + info.dataBytes);
  let vals: Float32Array;
  if (info.descr === "<f4") vals = new Float32Array(src.buffer);
  else if (info.descr === "<f2") vals = f16ToF32Array(new Uint16Array(src.buffer));
  else {
    const f64 = new Float64Array(src.buffer);
    vals = new Float32Array(f64.length);
    for (let i = 0; i < f64.length; i++) {
      vals[i] = f64[i];
      if (Number.isFinite(f64[i]) && !Number.isFinite(vals[i])) {
        fail(what, `float64 value ${f64[i]} at element ${i} is beyond the float32 range`);
      }
    }
  }
  if (info.fortran) {
    for (let c = 0; c < d; c++) for (let r = 0; r < n; r++) out[r * d + c] = vals[c * n + r];
  } else out.set(vals);
  checkFiniteRows(out, 0, n, d, what);
  return { info, data: out };
}

/**
 * Stream the rows of the .npy (or raw) data described by `info` as float32, in blocks of at
 * most `maxRows` rows: `sink(rows, first, count)` (the buffer is reused between calls). C-order
 * data is read block by block; Fortran-order data one column run per block and column, so
 * memory stays at one block either way. Errors name the file, row and column.
 */
export async function streamNpyRows(
  path: string,
  info: NpyInfo,
  maxRows: number,
  sink: (rows: Float32Array, first: number, count: number) => Promise<void>,
): Promise<void> {
  const [n, d] = info.shape;
  const item = ITEMSIZE[info.descr];
  const block = Math.max(1, Math.min(maxRows, n));
  const rows = new Float32Array(block * d);
  const raw = new Uint8Array((info.fortran ? block : block * d) * item);
  const tmp = new Float32Array(info.fortran ? block : 0);
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    throw new MonobenchError(`cannot open ${path}: ${(e as Error).message}`);
  }
  // Decode `cnt` values of `bytes` into `out`; `at(i)` gives the (row, column) of value i.
  const decode = (bytes: Uint8Array, out: Float32Array, cnt: number, at: (i: number) => [number, number]) => {
    if (info.descr === "<f4") out.set(new Float32Array(bytes.buffer, 0, cnt));
    else if (info.descr === "<f2") {
      f16ToF32Array(new Uint16Array(bytes.buffer, 0, cnt), out.subarray(0, cnt) as Float32Array<ArrayBuffer>);
    } else {
      const f64 = new Float64Array(bytes.buffer, 0, cnt);
      for (let i = 0; i < cnt; i++) {
        const r = Math.fround(f64[i]);
        if (Number.isFinite(f64[i]) && !Number.isFinite(r)) {
          const [row, col] = at(i);
          fail(
            path,
            `float64 value ${f64[i]} at row ${row}, column ${col} is beyond the float32 range`,
            "rescale the data; activation stores hold float32",
          );
        }
        out[i] = r;
      }
    }
  };
  try {
    for (let r0 = 0; r0 < n; r0 += block) {
      const cnt = Math.min(block, n - r0);
      const out = rows.subarray(0, cnt * d);
      if (!info.fortran) {
        await f.seek(info.dataOffset + r0 * d * item, Deno.SeekMode.Start);
        await readFull(f, raw.subarray(0, cnt * d * item), path);
        decode(raw, out, cnt * d, (i) => [r0 + Math.floor(i / d), i % d]);
      } else {
        // Column c of rows [r0, r0 + cnt) is the run at element c·n + r0.
        for (let c = 0; c < d; c++) {
          await f.seek(info.dataOffset + (c * n + r0) * item, Deno.SeekMode.Start);
          await readFull(f, raw.subarray(0, cnt * item), path);
          decode(raw, tmp, cnt, (i) => [r0 + i, c]);
          for (let i = 0; i < cnt; i++) out[i * d + c] = tmp[i];
        }
      }
      for (let i = 0; i < out.length; i++) {
        if (!Number.isFinite(out[i])) {
          fail(
            path,
            `non-finite value ${out[i]} at row ${r0 + Math.floor(i / d)}, column ${i % d}`,
            "activation stores refuse NaN/Inf: fix or drop those samples (in every split and embedding file alike)",
          );
        }
      }
      await sink(out, r0, cnt);
    }
  } finally {
    f.close();
  }
}
