/**
 * Read-only ZIP archive access for torch.save files (./pt.ts): the central directory (with
 * ZIP64), stored entries read by byte range straight from the file, deflated entries inflated
 * whole (torch writes stored entries; a re-zipped file may be deflated), CRC-32 checks.
 * Encrypted, multi-disk and other compression methods are refused with a MonobenchError.
 *
 * ```
 * [local header 30 B + name + extra][data] …  central directory entries …  [zip64 EOCD + locator]  EOCD 22 B + comment
 * ```
 */
import { MonobenchError } from "../util/errors.ts";

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the local header. */
  localOffset: number;
}

const EOCD_SIG = 0x06054b50;
const EOCD64_SIG = 0x06064b50;
const EOCD64_LOC_SIG = 0x07064b50;
const CEN_SIG = 0x02014b50;
const LOC_SIG = 0x04034b50;
const U32_MAX = 0xffffffff;

// CRC-32 (IEEE), slicing by 8.
const CRC_TABLES: Uint32Array[] = (() => {
  const t = Array.from({ length: 8 }, () => new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[0][i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s][i] = (t[s - 1][i] >>> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
  return t;
})();

/** Update a running CRC-32 (start with 0) with `data`. */
export function crc32(data: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES;
  let c = ~crc >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    const a = (c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24))) >>> 0;
    c = t7[a & 0xff] ^ t6[(a >>> 8) & 0xff] ^ t5[(a >>> 16) & 0xff] ^ t4[a >>> 24] ^
      t3[data[i + 4]] ^ t2[data[i + 5]] ^ t1[data[i + 6]] ^ t0[data[i + 7]];
  }
  for (; i < n; i++) c = t0[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

async function readAt(f: Deno.FsFile, offset: number, into: Uint8Array, what: string): Promise<void> {
  await f.seek(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < into.length) {
    const k = await f.read(into.subarray(got));
    if (k === null) throw new MonobenchError(`${what}: file ended early (truncated?)`);
    got += k;
  }
}

function u64(dv: DataView, off: number, what: string): number {
  const v = dv.getBigUint64(off, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MonobenchError(`${what}: corrupt ZIP64 field`);
  return Number(v);
}

/** An open archive; {@link close} when done. */
export class ZipReader {
  private constructor(
    readonly path: string,
    private readonly file: Deno.FsFile,
    readonly size: number,
    readonly entries: Map<string, ZipEntry>,
  ) {}

  /** Open `path` and read its central directory (throws MonobenchError if it is not a ZIP). */
  static async open(path: string): Promise<ZipReader> {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`file not found: ${path}`);
      throw new MonobenchError(`cannot open ${path}: ${(e as Error).message}`);
    }
    try {
      const size = (await f.stat()).size;
      const entries = await readDirectory(f, size, path);
      return new ZipReader(path, f, size, entries);
    } catch (e) {
      f.close();
      throw e;
    }
  }

  close(): void {
    this.file.close();
  }

  /** Offset of the entry's data in the file (reads its local header). */
  async dataOffset(e: ZipEntry): Promise<number> {
    const what = `${this.path}: ZIP entry ${e.name}`;
    const h = new Uint8Array(30);
    if (e.localOffset + 30 > this.size) {
      throw new MonobenchError(`${what} lies beyond the end of the file (truncated?)`);
    }
    await readAt(this.file, e.localOffset, h, this.path);
    const dv = new DataView(h.buffer);
    if (dv.getUint32(0, true) !== LOC_SIG) {
      throw new MonobenchError(`${what}: bad local header (corrupt archive)`);
    }
    const start = e.localOffset + 30 + dv.getUint16(26, true) + dv.getUint16(28, true);
    if (start + e.compressedSize > this.size) {
      throw new MonobenchError(
        `${what} needs ${e.compressedSize} bytes at offset ${start} but the file has ${this.size} (truncated?)`,
      );
    }
    return start;
  }

  /** The whole (inflated) entry, CRC-checked. */
  async read(e: ZipEntry): Promise<Uint8Array> {
    const start = await this.dataOffset(e);
    const raw = new Uint8Array(e.compressedSize);
    await readAt(this.file, start, raw, this.path);
    let data = raw;
    if (e.method === 8) {
      try {
        const stream = new Blob([raw]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
        data = new Uint8Array(await new Response(stream).arrayBuffer());
      } catch (err) {
        throw new MonobenchError(
          `${this.path}: ZIP entry ${e.name} does not inflate (${(err as Error).message})`,
        );
      }
    }
    if (data.length !== e.size) {
      throw new MonobenchError(
        `${this.path}: ZIP entry ${e.name} has ${data.length} bytes, the directory says ${e.size}`,
      );
    }
    if (crc32(data) !== e.crc32) {
      throw new MonobenchError(`${this.path}: ZIP entry ${e.name} fails its CRC-32 check (corrupt file)`);
    }
    return data;
  }

  /**
   * Read bytes [from, from + into.length) of a stored entry into `into` (no CRC: pass the
   * pieces to {@link crc32} and compare with `e.crc32` when the whole entry has been read).
   */
  async readRange(e: ZipEntry, from: number, into: Uint8Array): Promise<void> {
    if (e.method !== 0) throw new MonobenchError(`internal: readRange on a compressed entry ${e.name}`);
    if (from < 0 || from + into.length > e.size) {
      throw new MonobenchError(`internal: range outside ${e.name}`);
    }
    await readAt(this.file, (await this.dataOffset(e)) + from, into, this.path);
  }
}

async function readDirectory(f: Deno.FsFile, size: number, path: string): Promise<Map<string, ZipEntry>> {
  const notZip = () =>
    new MonobenchError(
      `${path}: not a complete ZIP archive (no end-of-central-directory record; truncated or not a torch.save file)`,
    );
  if (size < 22) throw notZip();
  const tailLen = Math.min(size, 22 + 0xffff + 20 + 56);
  const tail = new Uint8Array(tailLen);
  await readAt(f, size - tailLen, tail, path);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === EOCD_SIG && i + 22 + tv.getUint16(i + 20, true) === tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw notZip();
  if (tv.getUint16(eocd + 4, true) !== 0 || tv.getUint16(eocd + 6, true) !== 0) {
    throw new MonobenchError(`${path}: multi-disk ZIP archives are not supported`);
  }
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === U32_MAX || cdOffset === U32_MAX) {
    const loc = eocd - 20;
    if (loc < 0 || tv.getUint32(loc, true) !== EOCD64_LOC_SIG) throw notZip();
    const off64 = u64(tv, loc + 8, path);
    const rec = new Uint8Array(56);
    if (off64 + 56 > size) throw notZip();
    await readAt(f, off64, rec, path);
    const rv = new DataView(rec.buffer);
    if (rv.getUint32(0, true) !== EOCD64_SIG) throw notZip();
    count = u64(rv, 32, path);
    cdSize = u64(rv, 40, path);
    cdOffset = u64(rv, 48, path);
  }
  if (cdOffset + cdSize > size) {
    throw new MonobenchError(
      `${path}: the ZIP central directory lies beyond the end of the file (truncated?)`,
    );
  }
  if (cdSize > 256 << 20) throw new MonobenchError(`${path}: implausibly large ZIP central directory`);
  const cd = new Uint8Array(cdSize);
  await readAt(f, cdOffset, cd, path);
  const dv = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  const dec = new TextDecoder();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || dv.getUint32(p, true) !== CEN_SIG) {
      throw new MonobenchError(`${path}: corrupt ZIP central directory (entry ${i})`);
    }
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let csize = dv.getUint32(p + 20, true);
    let usize = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true), extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let local = dv.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) {
      throw new MonobenchError(`${path}: corrupt ZIP central directory (entry ${i})`);
    }
    const name = dec.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extended information: the 0xFFFFFFFF fields, in the order usize, csize, offset.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen;) {
      const id = dv.getUint16(x, true), len = dv.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        if (usize === U32_MAX) (usize = u64(dv, q, path)), (q += 8);
        if (csize === U32_MAX) (csize = u64(dv, q, path)), (q += 8);
        if (local === U32_MAX) local = u64(dv, q, path);
      }
      x += 4 + len;
    }
    if (flags & 1) throw new MonobenchError(`${path}: ZIP entry ${name} is encrypted`);
    if (method !== 0 && method !== 8) {
      throw new MonobenchError(
        `${path}: ZIP entry ${name} uses compression method ${method}; only stored and deflate are supported`,
        "torch.save writes uncompressed archives: re-save the file with torch.save",
      );
    }
    if (method === 0 && csize !== usize) {
      throw new MonobenchError(`${path}: corrupt ZIP entry ${name} (stored, but sizes differ)`);
    }
    if (entries.has(name)) throw new MonobenchError(`${path}: ZIP entry ${name} appears twice`);
    entries.set(name, { name, method, compressedSize: csize, size: usize, crc32: crc, localOffset: local });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}
