/**
 * Streaming writer of activation stores: rows are appended block by block and written out a
 * shard at a time, so importing thousands of part files holds one block plus one shard in
 * memory, never the whole matrix. The result is byte-for-byte what `writeStore`
 * (src/data/store.ts) writes for the same rows and options — same shards, header and content
 * hash — and it is written the same way: into a sibling temp directory, swapped into place by
 * {@link StoreWriter.finish} only when complete; {@link StoreWriter.abort} (or any error)
 * leaves an existing store untouched.
 */
import { basename, dirname, join } from "node:path";
import { F16_MAX, f32ToF16Array } from "../data/f16.ts";
import { Sha256 } from "../data/hash.ts";
import {
  STORE_FORMAT,
  STORE_VERSION,
  type StoreDType,
  type StoreHeader,
  type StoreShard,
} from "../data/store.ts";
import { check, MonobenchError } from "../util/errors.ts";

export interface StoreWriterOptions {
  dtype?: StoreDType;
  meta?: Record<string, unknown>;
  /** Rows per shard (default as writeStore: about 64 MiB per shard). */
  shardRows?: number;
}

const BYTES: Record<StoreDType, number> = { f32: 4, f16: 2 };

function randomTag(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

export class StoreWriter {
  private readonly hash: Sha256;
  private readonly shardBuf: Uint8Array;
  private inShard = 0;
  private rows = 0;
  private readonly shards: StoreShard[] = [];
  private done = false;

  private constructor(
    readonly dir: string,
    private readonly tmp: string,
    readonly n: number,
    readonly d: number,
    readonly dtype: StoreDType,
    readonly shardRows: number,
    private readonly meta: Record<string, unknown>,
  ) {
    this.hash = new Sha256().update(`${STORE_FORMAT} v${STORE_VERSION} n=${n} d=${d} dtype=${dtype}\n`);
    this.shardBuf = new Uint8Array(Math.min(shardRows, Math.max(n, 1)) * d * BYTES[dtype]);
  }

  /**
   * Start a store of `n` rows of width `d` at `dir`. `dir` may be absent, an empty directory or
   * an activation store (replaced on finish); the caller decides whether replacing is allowed.
   */
  static async create(
    dir: string,
    n: number,
    d: number,
    opts: StoreWriterOptions = {},
  ): Promise<StoreWriter> {
    const dtype = opts.dtype ?? "f32";
    check(dtype === "f32" || dtype === "f16", `store writer: unknown dtype ${JSON.stringify(dtype)}`);
    check(Number.isSafeInteger(n) && n >= 0, `store writer: n must be a non-negative integer, got ${n}`);
    check(Number.isSafeInteger(d) && d >= 1, `store writer: d must be a positive integer, got ${d}`);
    const shardRows = opts.shardRows ?? Math.max(1, Math.floor(64 * 2 ** 20 / (d * BYTES[dtype])));
    check(Number.isSafeInteger(shardRows) && shardRows >= 1, `store writer: bad shardRows ${shardRows}`);
    const meta = opts.meta ?? {};
    check(
      meta !== null && typeof meta === "object" && !Array.isArray(meta),
      "store writer: meta must be an object",
    );
    const parent = dirname(dir);
    await Deno.mkdir(parent, { recursive: true });
    const tmp = join(parent, `${basename(dir)}.${randomTag()}.tmp`);
    await Deno.mkdir(tmp);
    return new StoreWriter(dir, tmp, n, d, dtype, shardRows, meta);
  }

  /** Rows written so far. */
  get written(): number {
    return this.rows;
  }

  /**
   * Append rows (row-major, a multiple of d values). `what` names their source in messages;
   * NaN/Inf (and values beyond ±65504 for f16) are refused.
   */
  async append(x: Float32Array, what = this.dir): Promise<void> {
    check(!this.done, "store writer: already finished");
    const { d } = this;
    check(x.length % d === 0, `store writer: ${x.length} values are not whole rows of ${d}`);
    const count = x.length / d;
    check(this.rows + count <= this.n, `store writer: more than the announced ${this.n} rows`);
    const bpe = BYTES[this.dtype], rowBytes = d * bpe;
    let r = 0;
    while (r < count) {
      const take = Math.min(count - r, this.shardRows - this.inShard);
      const part = x.subarray(r * d, (r + take) * d);
      for (let i = 0; i < part.length; i++) {
        if (!Number.isFinite(part[i])) {
          throw new MonobenchError(`${what}: non-finite value ${part[i]} at element ${(r * d) + i}`);
        }
      }
      let bytes: Uint8Array;
      if (this.dtype === "f16") {
        const h = f32ToF16Array(part);
        for (let i = 0; i < h.length; i++) {
          if ((h[i] & 0x7c00) === 0x7c00) {
            throw new MonobenchError(
              `${what}: value ${part[i]} overflows float16 (max ${F16_MAX})`,
              "store this data as f32",
            );
          }
        }
        bytes = new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
      } else bytes = new Uint8Array(part.buffer, part.byteOffset, part.byteLength);
      this.shardBuf.set(bytes, this.inShard * rowBytes);
      this.inShard += take;
      this.rows += take;
      r += take;
      if (this.inShard === this.shardRows || this.rows === this.n) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.inShard === 0) return;
    const bytes = this.shardBuf.subarray(0, this.inShard * this.d * BYTES[this.dtype]);
    const file = `shard-${String(this.shards.length).padStart(5, "0")}.bin`;
    this.hash.update(bytes);
    await Deno.writeFile(join(this.tmp, file), bytes);
    this.shards.push({ file, rows: this.inShard, bytes: bytes.byteLength });
    this.inShard = 0;
  }

  /** Write the header and move the store into place (replacing a store at `dir`). */
  async finish(): Promise<StoreHeader> {
    check(!this.done, "store writer: already finished");
    try {
      check(this.rows === this.n, `store writer: ${this.rows} rows written, ${this.n} announced`);
      const header: StoreHeader = {
        format: STORE_FORMAT,
        version: STORE_VERSION,
        n: this.n,
        d: this.d,
        dtype: this.dtype,
        shardRows: this.shardRows,
        shards: this.shards,
        sha256: this.hash.hex(),
        meta: this.meta,
      };
      let text: string;
      try {
        text = JSON.stringify(header, null, 1) + "\n";
      } catch (e) {
        throw new MonobenchError(`${this.dir}: meta is not JSON-serialisable: ${(e as Error).message}`);
      }
      await Deno.writeTextFile(join(this.tmp, "header.json"), text);
      const existing = await statOrNull(this.dir);
      if (existing) {
        check(existing.isDirectory, `${this.dir} exists and is not a directory`);
        let empty = true;
        for await (const _ of Deno.readDir(this.dir)) {
          empty = false;
          break;
        }
        check(
          empty || (await statOrNull(join(this.dir, "header.json"))) !== null,
          `refusing to replace ${this.dir}: it is not an activation store (no header.json)`,
        );
        const old = join(dirname(this.dir), `${basename(this.dir)}.${randomTag()}.old.tmp`);
        await Deno.rename(this.dir, old);
        try {
          await Deno.rename(this.tmp, this.dir);
        } catch (e) {
          await Deno.rename(old, this.dir);
          throw e;
        }
        await Deno.remove(old, { recursive: true }).catch(() => {});
      } else {
        await Deno.rename(this.tmp, this.dir);
      }
      this.done = true;
      return header;
    } catch (e) {
      await this.abort();
      throw e;
    }
  }

  /** Drop everything written (the target is left as it was). */
  async abort(): Promise<void> {
    this.done = true;
    await Deno.remove(this.tmp, { recursive: true }).catch(() => {});
  }
}
