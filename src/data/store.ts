/**
 * Content-hashed activation store: a directory holding `header.json` and raw little-endian
 * shards of a row-major [n, d] matrix.
 *
 * ```
 * <dir>/header.json   {format:"monobench-activations", version:1, n, d, dtype:"f32"|"f16",
 *                      shardRows, shards:[{file, rows, bytes}], sha256, meta}
 * <dir>/shard-00000.bin  rows [0, shardRows) as little-endian float32 (or binary16) values
 * <dir>/shard-00001.bin  …
 * ```
 *
 * The content hash `sha256` is the SHA-256 of the ASCII line
 * `monobench-activations v1 n=<n> d=<d> dtype=<dtype>\n` followed by the stored data bytes of all
 * shards in order (so it covers n, d, dtype and data, but not the shard layout or `meta`).
 *
 * Writes are atomic: everything goes into a sibling temp directory that is renamed into place
 * only once complete, so a failed write never leaves a half-written store or damages the
 * previous one.
 */
import { basename, dirname, join } from "node:path";
import { asIoError, check, checkFinite, MonobenchError } from "../util/errors.ts";
import { F16_MAX, f16ToF32Array, f32ToF16Array } from "./f16.ts";
import { keyHash, Sha256, stableStringify } from "./hash.ts";

export const STORE_FORMAT = "monobench-activations";
export const STORE_VERSION = 1;

export type StoreDType = "f32" | "f16";

export interface StoreShard {
  /** File name inside the store directory. */
  file: string;
  rows: number;
  bytes: number;
}

export interface StoreHeader {
  format: typeof STORE_FORMAT;
  version: typeof STORE_VERSION;
  n: number;
  d: number;
  dtype: StoreDType;
  shardRows: number;
  shards: StoreShard[];
  sha256: string;
  meta: Record<string, unknown>;
}

export interface WriteStoreOptions {
  /** Storage type (default "f32"). "f16" rounds to nearest-even binary16; |x| > 65504 is refused. */
  dtype?: StoreDType;
  /** Free-form JSON metadata (not part of the content hash). */
  meta?: Record<string, unknown>;
  /** Rows per shard file (default: about 64 MiB per shard). */
  shardRows?: number;
  /**
   * Replace `dir` even when it exists and is not an activation store (default false: refuse).
   * Used for cache directories whose previous content is known to be unusable.
   */
  replaceNonStore?: boolean;
}

const BYTES: Record<StoreDType, number> = { f32: 4, f16: 2 };
const SHARD_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** Stores up to this many bytes are read into memory on open (unless `preload` says otherwise). */
const PRELOAD_LIMIT = 512 * 2 ** 20;

check(
  new Uint8Array(new Uint16Array([1]).buffer)[0] === 1,
  "activation stores need a little-endian host",
);

function hashPrefix(n: number, d: number, dtype: StoreDType): string {
  return `${STORE_FORMAT} v${STORE_VERSION} n=${n} d=${d} dtype=${dtype}\n`;
}

function randomTag(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Write `x` ([n, d] row-major) as an activation store in `dir` (atomically replacing an existing
 * store there). Refuses NaN/±Infinity (and, for f16, values beyond the binary16 range) and
 * refuses to replace a directory that is not an activation store. Returns the header written.
 */
export async function writeStore(
  dir: string,
  x: Float32Array,
  n: number,
  d: number,
  opts: WriteStoreOptions = {},
): Promise<StoreHeader> {
  const dtype = opts.dtype ?? "f32";
  check(dtype === "f32" || dtype === "f16", `writeStore: unknown dtype ${JSON.stringify(dtype)}`);
  check(Number.isInteger(n) && n >= 0, `writeStore: n must be a non-negative integer, got ${n}`);
  check(Number.isInteger(d) && d >= 1, `writeStore: d must be a positive integer, got ${d}`);
  check(
    x.length === n * d,
    `writeStore: data has ${x.length} values, expected n·d = ${n}·${d} = ${n * d}`,
  );
  const bpe = BYTES[dtype];
  const shardRows = opts.shardRows ?? Math.max(1, Math.floor(64 * 2 ** 20 / (d * bpe)));
  check(
    Number.isInteger(shardRows) && shardRows >= 1,
    `writeStore: shardRows must be a positive integer, got ${shardRows}`,
  );
  checkFinite(x, `writeStore(${dir})`);
  let data: Uint8Array;
  if (dtype === "f16") {
    const h = f32ToF16Array(x);
    for (let i = 0; i < h.length; i++) {
      if ((h[i] & 0x7c00) === 0x7c00) {
        throw new MonobenchError(
          `writeStore(${dir}): value ${x[i]} at element ${i} overflows float16 (max ${F16_MAX})`,
          "store this data as f32",
        );
      }
    }
    data = new Uint8Array(h.buffer);
  } else {
    data = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  }
  const meta = opts.meta ?? {};
  check(
    meta !== null && typeof meta === "object" && !Array.isArray(meta),
    "writeStore: meta must be an object",
  );

  const existing = await statOrNull(dir);
  if (existing) {
    check(existing.isDirectory, `writeStore: ${dir} exists and is not a directory`);
    const hasHeader = await statOrNull(join(dir, "header.json"));
    let empty = true;
    for await (const _ of Deno.readDir(dir)) {
      empty = false;
      break;
    }
    check(
      hasHeader !== null || empty || opts.replaceNonStore === true,
      `writeStore: refusing to replace ${dir}: it is not an activation store (no header.json)`,
    );
  }

  const parent = dirname(dir);
  const tmp = join(parent, `${basename(dir)}.${randomTag()}.tmp`);
  try {
    await Deno.mkdir(parent, { recursive: true });
    await Deno.mkdir(tmp);
  } catch (e) {
    throw asIoError(e, `cannot write activation store ${dir}`);
  }
  let header: StoreHeader;
  try {
    const hash = new Sha256().update(hashPrefix(n, d, dtype));
    const shards: StoreShard[] = [];
    const rowBytes = d * bpe;
    for (let r = 0, i = 0; r < n; r += shardRows, i++) {
      const rows = Math.min(shardRows, n - r);
      const file = `shard-${String(i).padStart(5, "0")}.bin`;
      const bytes = data.subarray(r * rowBytes, (r + rows) * rowBytes);
      hash.update(bytes);
      await Deno.writeFile(join(tmp, file), bytes);
      shards.push({ file, rows, bytes: bytes.byteLength });
    }
    header = {
      format: STORE_FORMAT,
      version: STORE_VERSION,
      n,
      d,
      dtype,
      shardRows,
      shards,
      sha256: hash.hex(),
      meta,
    };
    let text: string;
    try {
      text = JSON.stringify(header, null, 1) + "\n";
    } catch (e) {
      throw new MonobenchError(`writeStore(${dir}): meta is not JSON-serialisable: ${(e as Error).message}`);
    }
    await Deno.writeTextFile(join(tmp, "header.json"), text);
    // Swap into place: move the old store aside, move the new one in, then delete the old one.
    if (existing) {
      const old = join(parent, `${basename(dir)}.${randomTag()}.old.tmp`);
      await Deno.rename(dir, old);
      try {
        await Deno.rename(tmp, dir);
      } catch (e) {
        await Deno.rename(old, dir);
        throw e;
      }
      await Deno.remove(old, { recursive: true }).catch(() => {});
    } else {
      await Deno.rename(tmp, dir);
    }
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    // A full or read-only disk is the user's environment, not a bug; the old store is intact.
    throw asIoError(e, `cannot write activation store ${dir} (the previous content is unchanged)`);
  }
  return header;
}

function parseHeader(dir: string, text: string): StoreHeader {
  let h: unknown;
  try {
    h = JSON.parse(text);
  } catch (e) {
    throw new MonobenchError(`activation store ${dir}: malformed header.json (${(e as Error).message})`);
  }
  const bad = (what: string): never => {
    throw new MonobenchError(`activation store ${dir}: malformed header.json: ${what}`);
  };
  if (h === null || typeof h !== "object" || Array.isArray(h)) bad("not a JSON object");
  const o = h as Record<string, unknown>;
  if (o.format !== STORE_FORMAT) {
    throw new MonobenchError(
      `activation store ${dir}: header.json has format ${
        JSON.stringify(o.format)
      }, expected "${STORE_FORMAT}"`,
    );
  }
  if (o.version !== STORE_VERSION) {
    throw new MonobenchError(
      `activation store ${dir}: unsupported version ${
        JSON.stringify(o.version)
      } (this reader supports ${STORE_VERSION})`,
    );
  }
  const isInt = (v: unknown, min: number) => typeof v === "number" && Number.isInteger(v) && v >= min;
  if (!isInt(o.n, 0)) bad(`n = ${JSON.stringify(o.n)}`);
  if (!isInt(o.d, 1)) bad(`d = ${JSON.stringify(o.d)}`);
  if (o.dtype !== "f32" && o.dtype !== "f16") bad(`dtype = ${JSON.stringify(o.dtype)}`);
  if (!isInt(o.shardRows, 1)) bad(`shardRows = ${JSON.stringify(o.shardRows)}`);
  if (typeof o.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(o.sha256)) bad("sha256 is not a hex digest");
  if (o.meta !== undefined && (o.meta === null || typeof o.meta !== "object" || Array.isArray(o.meta))) {
    bad("meta is not an object");
  }
  if (!Array.isArray(o.shards)) bad("shards is not an array");
  const n = o.n as number, d = o.d as number, dtype = o.dtype as StoreDType;
  const shardRows = o.shardRows as number;
  let total = 0;
  const shards: StoreShard[] = [];
  for (const [i, s] of (o.shards as unknown[]).entries()) {
    if (s === null || typeof s !== "object") bad(`shards[${i}] is not an object`);
    const sh = s as Record<string, unknown>;
    if (typeof sh.file !== "string" || !SHARD_NAME.test(sh.file)) {
      bad(`shards[${i}].file is not a plain file name`);
    }
    if (!isInt(sh.rows, 1) || (sh.rows as number) > shardRows) {
      bad(`shards[${i}].rows = ${JSON.stringify(sh.rows)}`);
    }
    const bytes = (sh.rows as number) * d * BYTES[dtype];
    if (sh.bytes !== undefined && sh.bytes !== bytes) {
      bad(`shards[${i}].bytes = ${sh.bytes}, expected ${bytes}`);
    }
    total += sh.rows as number;
    shards.push({ file: sh.file as string, rows: sh.rows as number, bytes });
  }
  if (total !== n) bad(`shards hold ${total} rows, but n = ${n}`);
  return {
    format: STORE_FORMAT,
    version: STORE_VERSION,
    n,
    d,
    dtype,
    shardRows,
    shards,
    sha256: o.sha256 as string,
    meta: (o.meta ?? {}) as Record<string, unknown>,
  };
}

export interface OpenStoreOptions {
  /** Read all shards into memory now (default: when the store is at most 512 MiB). */
  preload?: boolean;
  /** Also check the content hash (default false: header and shard sizes only). */
  verify?: boolean;
}

/** Read access to an activation store (see the module comment for the format). */
export class ActivationStore {
  /** First row index of each shard (plus n at the end). */
  private readonly starts: number[];
  private constructor(
    readonly dir: string,
    readonly header: StoreHeader,
    private raw: Uint8Array | null,
  ) {
    this.starts = [0];
    for (const s of header.shards) this.starts.push(this.starts[this.starts.length - 1] + s.rows);
  }

  /** Number of rows. */
  get n(): number {
    return this.header.n;
  }
  /** Row width. */
  get d(): number {
    return this.header.d;
  }
  /** Content hash (see the module comment). */
  get sha256(): string {
    return this.header.sha256;
  }

  /**
   * Open the store in `dir`: validates header.json and the presence and exact size of every
   * shard (the content hash is checked only by {@link verify}).
   */
  static async open(dir: string, opts: OpenStoreOptions = {}): Promise<ActivationStore> {
    const st = await statOrNull(dir);
    if (!st) throw new MonobenchError(`activation store not found: ${dir}`);
    check(st.isDirectory, `activation store ${dir} is not a directory`);
    let text: string;
    try {
      text = await Deno.readTextFile(join(dir, "header.json"));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new MonobenchError(`activation store ${dir}: header.json is missing`);
      }
      throw e;
    }
    const header = parseHeader(dir, text);
    let totalBytes = 0;
    for (const s of header.shards) {
      const fs = await statOrNull(join(dir, s.file));
      if (!fs) throw new MonobenchError(`activation store ${dir}: shard ${s.file} is missing`);
      if (!fs.isFile || fs.size !== s.bytes) {
        throw new MonobenchError(
          `activation store ${dir}: shard ${s.file} has ${fs.size} bytes, expected ${s.bytes} ` +
            `(${s.rows} rows × ${header.d} × ${header.dtype}); the store is truncated or corrupt`,
        );
      }
      totalBytes += s.bytes;
    }
    const store = new ActivationStore(dir, header, null);
    if (opts.preload ?? totalBytes <= PRELOAD_LIMIT) {
      const raw = new Uint8Array(totalBytes);
      let off = 0;
      for (const s of header.shards) {
        const b = await Deno.readFile(join(dir, s.file));
        check(b.byteLength === s.bytes, `activation store ${dir}: shard ${s.file} changed while reading`);
        raw.set(b, off);
        off += b.byteLength;
      }
      store.raw = raw;
    }
    if (opts.verify) await store.verify();
    return store;
  }

  /** Rows [start, start + count) as a new Float32Array [count · d]. */
  rows(start: number, count: number): Float32Array {
    const { n, d, dtype } = this.header;
    if (
      !Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 ||
      start + count > n
    ) {
      throw new MonobenchError(
        `activation store ${this.dir}: rows(${start}, ${count}) out of range (store has ${n} rows)`,
      );
    }
    const bpe = BYTES[dtype];
    const rowBytes = d * bpe;
    const bytes = new Uint8Array(count * rowBytes);
    if (this.raw) {
      bytes.set(this.raw.subarray(start * rowBytes, (start + count) * rowBytes));
    } else {
      let r = start;
      while (r < start + count) {
        let si = 0;
        while (this.starts[si + 1] <= r) si++;
        const s = this.header.shards[si];
        const inShard = r - this.starts[si];
        const take = Math.min(s.rows - inShard, start + count - r);
        readRange(
          join(this.dir, s.file),
          inShard * rowBytes,
          bytes.subarray((r - start) * rowBytes, (r - start + take) * rowBytes),
        );
        r += take;
      }
    }
    if (dtype === "f32") return new Float32Array(bytes.buffer);
    return f16ToF32Array(new Uint16Array(bytes.buffer));
  }

  /** All rows as one Float32Array [n · d]. */
  all(): Float32Array {
    return this.rows(0, this.header.n);
  }

  /**
   * Re-hash the store's data and compare with the header's content hash; throws a
   * MonobenchError on a missing/truncated shard or a hash mismatch. A preloaded store hashes the
   * bytes it holds in memory (the data every read returns), otherwise the shard files.
   */
  async verify(): Promise<void> {
    const { n, d, dtype } = this.header;
    const hash = new Sha256().update(hashPrefix(n, d, dtype));
    if (this.raw) {
      hash.update(this.raw);
      this.checkHash(hash.hex());
      return;
    }
    for (const s of this.header.shards) {
      let b: Uint8Array;
      try {
        b = await Deno.readFile(join(this.dir, s.file));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) {
          throw new MonobenchError(`activation store ${this.dir}: shard ${s.file} is missing`);
        }
        throw e;
      }
      if (b.byteLength !== s.bytes) {
        throw new MonobenchError(
          `activation store ${this.dir}: shard ${s.file} has ${b.byteLength} bytes, expected ${s.bytes}`,
        );
      }
      hash.update(b);
    }
    this.checkHash(hash.hex());
  }

  private checkHash(got: string): void {
    if (got !== this.header.sha256) {
      throw new MonobenchError(
        `activation store ${this.dir}: content hash mismatch (header ${this.header.sha256.slice(0, 16)}…, ` +
          `data ${got.slice(0, 16)}…): the data was changed or is corrupt`,
        "restore the original data, or delete the directory and regenerate (or re-import) it",
      );
    }
  }
}

function readRange(path: string, offset: number, into: Uint8Array): void {
  const f = Deno.openSync(path, { read: true });
  try {
    f.seekSync(offset, Deno.SeekMode.Start);
    let got = 0;
    while (got < into.byteLength) {
      const k = f.readSync(into.subarray(got));
      if (k === null || k === 0) {
        throw new MonobenchError(`activation store: ${path} is shorter than its header says (truncated?)`);
      }
      got += k;
    }
  } finally {
    f.close();
  }
}

export interface CachedStoreOptions {
  dtype?: StoreDType;
  /** Extra metadata written with a new store. */
  meta?: Record<string, unknown>;
  /** Check the content hash of an existing store before using it (default false). */
  verify?: boolean;
  /** Called with a message when an existing cache entry is unusable and gets rebuilt. */
  onWarn?: (message: string) => void;
}

/** What a producer returns for {@link cachedStore}. */
export interface StoreContent {
  x: Float32Array;
  n: number;
  d: number;
  meta?: Record<string, unknown>;
}

/**
 * Find or create a store keyed by its inputs: the store lives in
 * `<cacheDir>/<name>-<hash of key>`; if it exists (with the same key recorded in
 * `meta.cacheKey`) it is opened, otherwise `produce()` is called and its result written.
 */
export async function cachedStore(
  cacheDir: string,
  name: string,
  key: unknown,
  produce: () => Promise<StoreContent> | StoreContent,
  opts: CachedStoreOptions = {},
): Promise<{ store: ActivationStore; created: boolean }> {
  check(SHARD_NAME.test(name), `cachedStore: bad name ${JSON.stringify(name)}`);
  const keyText = stableStringify(key);
  const dir = join(cacheDir, `${name}-${keyHash(key)}`);
  if (await statOrNull(dir)) {
    try {
      const store = await ActivationStore.open(dir);
      check(store.header.meta.cacheKey === keyText, `cache key mismatch in ${dir}`);
      check(
        opts.dtype === undefined || store.header.dtype === opts.dtype,
        `dtype mismatch in ${dir}`,
      );
      if (opts.verify) await store.verify();
      return { store, created: false };
    } catch (e) {
      if (!(e instanceof MonobenchError)) throw e;
      opts.onWarn?.(`rebuilding cached store: ${e.message}`);
    }
  }
  const c = await produce();
  await writeStore(dir, c.x, c.n, c.d, {
    dtype: opts.dtype,
    meta: { ...opts.meta, ...c.meta, cacheKey: keyText },
    replaceNonStore: true,
  });
  return { store: await ActivationStore.open(dir), created: true };
}
