/**
 * Bring your own data: convert user arrays into activation stores (src/data/store.ts) and build
 * data manifests (src/run/data.ts) from them.
 *
 * Inputs (one [N, D] matrix per file; several files are concatenated row-wise, in order):
 * - NumPy `.npy` (see ./npy.ts: `<f4`, `<f2`, `<f8`, C or Fortran order, format 1.0–3.0);
 * - PyTorch `.pt` / `.pth` written by torch.save (see ./pt.ts: one 2-D float32 / float16 /
 *   bfloat16 / float64 tensor, contiguous or strided), as the reference's save_activations.py
 *   and encode_images.py write them;
 * - raw little-endian float32 (`.bin`, `.raw`, `.f32`, `.dat`, or `format: "raw"`) with a shape
 *   `[N, D]` given by the caller (N = -1: from the file size), applying to each raw file;
 * - CSV of numbers only (`.csv`, or `format: "csv"`), comma-separated, optionally with one
 *   header line to skip.
 * A path whose file name contains `*` or `?` is expanded in its directory (natural order, so
 * `x_part2` precedes `x_part10`). A directory stands for the part files in it (`…_part{n}.pt`,
 * `.pth` or `.npy`, sorted by n, files starting with "all" skipped — as the reference's
 * ActivationsDataset reads an activations folder). With `parts`, all inputs are sorted by their
 * part number (`…_part{n}…`, else the last number in the name).
 *
 * Inputs are streamed: only their headers are read up front, then each one is read a block at
 * a time into a streaming store writer (./store_writer.ts), so thousands of small parts (or
 * one large file) never sit in memory together. Every store is written atomically; a manifest
 * import stages all stores first and swaps them (and then the manifest) into place only when
 * every input converted cleanly, so a failed import leaves existing stores and manifests
 * untouched.
 */
import { basename, dirname, extname, join, relative, resolve, sep as SEPARATOR } from "node:path";
import { ActivationStore, type StoreDType, type StoreHeader } from "../data/store.ts";
import { atomicWrite } from "../report/atomic.ts";
import { LAYER_NAME_PATTERN } from "../types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import {
  checkFiniteRows,
  type NpyInfo,
  rawInfo,
  type ReadIntoOptions,
  readNpyHeader,
  streamNpyRows,
} from "./npy.ts";
import { openPt, ptMatrix, streamPtRows } from "./pt.ts";
import { listDir } from "./fsutil.ts";
import { StoreWriter } from "./store_writer.ts";

export type InputFormat = "npy" | "pt" | "raw" | "csv";
export const INPUT_FORMATS: readonly InputFormat[] = ["npy", "pt", "raw", "csv"];

/** Rows per streamed block: about 4 MiB of float32. */
function blockRows(d: number): number {
  return Math.max(1, Math.floor((4 << 20) / (4 * d)));
}

export interface InputOptions extends ReadIntoOptions {
  /** Force the format of every input (default: from the file extension). */
  format?: InputFormat;
  /** Shape of each raw float32 file: [N, D], N = -1 to infer N from the file size. */
  shape?: [number, number];
  /** CSV: skip the first line. */
  header?: boolean;
  /** Sort the inputs by part number. */
  parts?: boolean;
}

/** One opened input file: its shape is known, its data is read on demand. */
export interface ArrayInput {
  path: string;
  format: InputFormat;
  n: number;
  d: number;
  /** One line for messages, e.g. "acts_part0.npy: 100 × 768 <f2 (npy 1.0, C order)". */
  describe: string;
  /** Read the rows into `out` (row-major, `d` columns) starting at row `rowOffset`. */
  read(out: Float32Array, rowOffset: number): Promise<void>;
  /** Read the rows in order, in blocks of at most `maxRows` (the buffer is reused). */
  stream(
    maxRows: number,
    sink: (rows: Float32Array, first: number, count: number) => Promise<void>,
  ): Promise<void>;
}

/** Concatenated data of several inputs. */
export interface ArrayData {
  n: number;
  d: number;
  data: Float32Array;
  inputs: ArrayInput[];
}

const RAW_EXT = new Set([".bin", ".raw", ".f32", ".dat"]);

function formatOf(path: string, opts: InputOptions): InputFormat {
  if (opts.format) return opts.format;
  const ext = extname(path).toLowerCase();
  if (ext === ".npy") return "npy";
  if (ext === ".pt" || ext === ".pth") return "pt";
  if (ext === ".csv") return "csv";
  if (RAW_EXT.has(ext)) return "raw";
  if (ext === ".npz") {
    throw new MonobenchError(
      `${path}: .npz archives are not supported`,
      "save each array with numpy.save into its own .npy file",
    );
  }
  throw new MonobenchError(
    `${path}: cannot tell the format from the extension "${ext}"`,
    `name files .npy, .pt, .csv or .bin (raw float32), or pass --format ${INPUT_FORMATS.join("|")}`,
  );
}

async function statFile(path: string): Promise<Deno.FileInfo> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MonobenchError(`input file not found: ${path}`);
    throw new MonobenchError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (st.isDirectory) {
    throw new MonobenchError(
      `${path} is a directory, expected a file`,
      `pass the files themselves, e.g. "${join(path, "*.npy")}" (quoted) with --parts, or the directory ` +
        "of part files without --format",
    );
  }
  return st;
}

function npyInput(path: string, info: NpyInfo, format: InputFormat, opts: InputOptions): ArrayInput {
  const [n, d] = info.shape;
  const desc = format === "raw"
    ? `${path}: ${n} × ${d} float32 (raw)`
    : `${path}: ${n} × ${d} ${info.descr} (npy ${info.version}, ${info.fortran ? "Fortran" : "C"} order)`;
  const stream = (maxRows: number, sink: (r: Float32Array, first: number, count: number) => Promise<void>) =>
    streamNpyRows(
      path,
      info,
      opts.chunkBytes ? Math.max(1, Math.floor(opts.chunkBytes / (4 * d))) : maxRows,
      sink,
    );
  return { path, format, n, d, describe: desc, read: readVia(stream, d), stream };
}

/** `read` on top of `stream`. */
function readVia(
  stream: ArrayInput["stream"],
  d: number,
): (out: Float32Array, rowOffset: number) => Promise<void> {
  return (out, rowOffset) =>
    stream(blockRows(d), (rows, first) => {
      out.set(rows, (rowOffset + first) * d);
      return Promise.resolve();
    });
}

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const NONFINITE = /^[+-]?(nan|inf|infinity)$/i;

function parseCsvFile(
  path: string,
  text: string,
  header: boolean,
): { n: number; d: number; data: Float32Array } {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const lines = text.split(/\r\n|\n|\r/);
  const values: number[] = [];
  let d = -1, n = 0;
  for (let li = header ? 1 : 0; li < lines.length; li++) {
    const line = lines[li];
    if (line.trim() === "") continue;
    const cells = line.split(",");
    if (d === -1) d = cells.length;
    if (cells.length !== d) {
      throw new MonobenchError(
        `${path}: line ${li + 1} has ${cells.length} values, the first data line has ${d}`,
        header
          ? "CSV inputs hold numbers only, one sample per line"
          : "if the file has a header line, pass --header",
      );
    }
    for (let c = 0; c < d; c++) {
      let cell = cells[c].trim();
      if (cell.length >= 2 && cell[0] === '"' && cell[cell.length - 1] === '"') {
        cell = cell.slice(1, -1).trim();
      }
      if (!NUMBER.test(cell)) {
        const where = `line ${li + 1}, column ${c + 1}`;
        if (NONFINITE.test(cell)) {
          throw new MonobenchError(
            `${path}: non-finite value "${cell}" at ${where}`,
            "activation stores refuse NaN/Inf: fix or drop those samples",
          );
        }
        throw new MonobenchError(
          `${path}: ${cell === "" ? "empty cell" : `"${cell}" is not a number`} at ${where}`,
          n === 0 && !header
            ? "if the first line is a header, pass --header"
            : "CSV inputs hold numbers only",
        );
      }
      const v = Number(cell);
      if (!Number.isFinite(Math.fround(v))) {
        throw new MonobenchError(
          `${path}: value ${cell} at line ${li + 1}, column ${c + 1} is beyond the float32 range`,
        );
      }
      values.push(v);
    }
    n++;
  }
  if (n === 0) throw new MonobenchError(`${path}: no data rows`);
  const data = Float32Array.from(values);
  checkFiniteRows(data, 0, n, d, path);
  return { n, d, data };
}

/** Open one input file: read its header (npy), check its size (raw) or parse it (CSV). */
export async function openInput(path: string, opts: InputOptions = {}): Promise<ArrayInput> {
  const format = formatOf(path, opts);
  const st = await statFile(path);
  if (format === "npy") return npyInput(path, await readNpyHeader(path), format, opts);
  if (format === "pt") {
    const t = ptMatrix(await openPt(path));
    const [n, d] = t.shape;
    const contiguous = t.stride[1] === 1 && t.stride[0] === d;
    const stream: ArrayInput["stream"] = (maxRows, sink) => streamPtRows(t, maxRows, sink);
    return {
      path,
      format,
      n,
      d,
      describe: `${path}: ${n} × ${d} ${t.dtype} (torch.save${contiguous ? "" : ", strided"})`,
      read: readVia(stream, d),
      stream,
    };
  }
  if (format === "raw") {
    const shape = opts.shape;
    if (!shape) {
      throw new MonobenchError(
        `${path}: a raw float32 file needs its shape`,
        "pass --shape N,D (--shape auto,D infers N from the file size)",
      );
    }
    const [sn, d] = shape;
    check(Number.isSafeInteger(d) && d >= 1, `--shape: D must be a positive integer, got ${d}`);
    const size = st.size;
    const values = size / 4;
    if (size % 4 !== 0) {
      throw new MonobenchError(`${path}: ${size} bytes is not a whole number of float32 values`);
    }
    let n = sn;
    if (sn === -1) {
      if (values % d !== 0 || values === 0) {
        throw new MonobenchError(
          `${path}: ${values} float32 values do not form rows of D = ${d}`,
          `${values} = ${factorHint(values)}`,
        );
      }
      n = values / d;
    } else {
      check(Number.isSafeInteger(sn) && sn >= 1, `--shape: N must be a positive integer or -1, got ${sn}`);
      if (sn * d !== values) {
        throw new MonobenchError(
          `${path}: --shape ${sn},${d} needs ${sn * d * 4} bytes (${sn * d} float32 values), ` +
            `the file has ${size} bytes (${values} values)`,
          values % d === 0
            ? `with D = ${d} the file holds ${values / d} rows: --shape ${values / d},${d}`
            : undefined,
        );
      }
    }
    return npyInput(path, rawInfo(path, n, d), format, opts);
  }
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const csv = parseCsvFile(path, text, opts.header ?? false);
  const stream: ArrayInput["stream"] = async (maxRows, sink) => {
    for (let r = 0; r < csv.n; r += maxRows) {
      const cnt = Math.min(maxRows, csv.n - r);
      await sink(csv.data.subarray(r * csv.d, (r + cnt) * csv.d), r, cnt);
    }
  };
  return {
    path,
    format,
    n: csv.n,
    d: csv.d,
    describe: `${path}: ${csv.n} × ${csv.d} (csv)`,
    read: (out, rowOffset) => {
      out.set(csv.data, rowOffset * csv.d);
      return Promise.resolve();
    },
    stream,
  };
}

function factorHint(values: number): string {
  const ds = [];
  for (const d of [2, 3, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1152, 1280, 2048, 4096]) {
    if (values % d === 0) ds.push(`${values / d} × ${d}`);
  }
  return ds.length ? ds.slice(-4).join(", or ") : "no common row width";
}

/** The part number of a file name: `…part{n}…` (last one), else the last number; null if none. */
export function partNumber(path: string): number | null {
  const name = basename(path);
  const parts = [...name.matchAll(/part[_-]?(\d+)/gi)];
  if (parts.length) return Number(parts[parts.length - 1][1]);
  const nums = name.match(/\d+/g);
  return nums ? Number(nums[nums.length - 1]) : null;
}

/** Sort paths by part number (throws if a file has none or two files share one). */
export function sortByPart(paths: string[]): string[] {
  const keyed = paths.map((p) => ({ p, k: partNumber(p) }));
  for (const { p, k } of keyed) {
    check(k !== null, `--parts: ${p} has no part number in its name (expected e.g. "…_part3.npy")`);
  }
  keyed.sort((a, b) => a.k! - b.k!);
  for (let i = 1; i < keyed.length; i++) {
    check(
      keyed[i].k !== keyed[i - 1].k,
      `--parts: ${keyed[i - 1].p} and ${keyed[i].p} have the same part number ${keyed[i].k}`,
    );
  }
  return keyed.map((x) => x.p);
}

/** Compare names so that embedded numbers sort numerically ("a2" < "a10"). */
export function naturalCompare(a: string, b: string): number {
  const ta = a.split(/(\d+)/), tb = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    if (ta[i] === tb[i]) continue;
    if (i % 2 === 1) {
      const d = Number(ta[i]) - Number(tb[i]);
      if (d !== 0) return d;
    }
    return ta[i] < tb[i] ? -1 : 1;
  }
  return ta.length - tb.length;
}

function globToRegExp(glob: string): RegExp {
  const esc = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${esc}$`);
}

const PART_EXT = new Set([".pt", ".pth", ".npy"]);

/**
 * The part files of a directory, as the reference's ActivationsDataset takes them: `.pt`,
 * `.pth` (or `.npy`) files not starting with "all", sorted by the number after `_part`.
 */
export async function partFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await listDir(dir)) {
    if (e.isFile && PART_EXT.has(extname(e.name).toLowerCase()) && !e.name.startsWith("all")) {
      found.push(e.name);
    }
  }
  check(
    found.length > 0,
    `${dir} holds no part files (…_part<N>.pt, .pth or .npy)`,
    "give the files themselves, or a directory as save_activations.py writes it",
  );
  const exts = new Set(found.map((f) => extname(f).toLowerCase() === ".npy" ? "npy" : "pt"));
  check(exts.size === 1, `${dir} mixes .npy and .pt part files`, "keep one format per directory");
  for (const f of found) {
    check(
      /_part\d+\.[^.]+$/i.test(f),
      `${join(dir, f)}: no part number (expected "…_part<N>${extname(f)}" in a directory of parts)`,
      "move other files out of the directory, or list the files explicitly",
    );
  }
  return sortByPart(found.map((f) => join(dir, f)));
}

/**
 * Expand `*` / `?` in file names (not in directory names; natural order) and directories into
 * their part files ({@link partFiles}).
 */
export async function expandInputs(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const name = basename(p);
    if (!/[*?]/.test(name)) {
      const st = await exists(p);
      if (st?.isDirectory && !(await exists(join(p, "header.json")))) out.push(...await partFiles(p));
      else out.push(p);
      continue;
    }
    check(!/[*?]/.test(dirname(p)), `${p}: wildcards are only supported in the file name`);
    const dir = dirname(p);
    const re = globToRegExp(name);
    const found: string[] = [];
    for (const e of await listDir(dir)) if (e.isFile && re.test(e.name)) found.push(e.name);
    check(found.length > 0, `no file matches ${p}`);
    found.sort(naturalCompare);
    for (const f of found) out.push(dir === "." && !p.startsWith(`.${SEPARATOR}`) ? f : join(dir, f));
  }
  return out;
}

/** Open all inputs (expanding wildcards, sorting by part with `parts`) and check their widths agree. */
export async function openInputs(
  paths: string[],
  opts: InputOptions = {},
  what = "inputs",
): Promise<ArrayInput[]> {
  check(paths.length > 0, `${what}: no input files`);
  let list = await expandInputs(paths);
  if (opts.parts) list = sortByPart(list);
  const seen = new Set<string>();
  for (const p of list) {
    const r = resolve(p);
    check(!seen.has(r), `${what}: ${p} is listed twice`);
    seen.add(r);
  }
  const inputs: ArrayInput[] = [];
  for (const p of list) inputs.push(await openInput(p, opts));
  const d = inputs[0].d;
  for (const inp of inputs) {
    if (inp.d !== d) {
      throw new MonobenchError(
        `${what}: ${inp.path} has D = ${inp.d} columns but ${inputs[0].path} has D = ${d}`,
        "all parts of one store must have the same row width (same layer / same encoder)",
      );
    }
  }
  return inputs;
}

/** Stream opened inputs (concatenated in order) into a store at `dir` (see {@link StoreWriter}). */
export async function writeInputs(
  inputs: ArrayInput[],
  dir: string,
  opts: { dtype?: StoreDType; meta?: Record<string, unknown>; shardRows?: number } = {},
): Promise<StoreHeader> {
  check(inputs.length > 0, "no input files");
  const d = inputs[0].d;
  const n = inputs.reduce((s, x) => s + x.n, 0);
  const w = await StoreWriter.create(dir, n, d, opts);
  try {
    for (const inp of inputs) {
      check(inp.d === d, `${inp.path}: D = ${inp.d}, expected ${d}`);
      await inp.stream(blockRows(d), (rows) => w.append(rows, inp.path));
    }
  } catch (e) {
    await w.abort();
    throw e;
  }
  return await w.finish();
}

/** Read and concatenate opened inputs. */
export async function readInputs(inputs: ArrayInput[]): Promise<ArrayData> {
  check(inputs.length > 0, "no input files");
  const d = inputs[0].d;
  const n = inputs.reduce((s, x) => s + x.n, 0);
  check(
    n * d <= 2 ** 32 - 1,
    `${n} × ${d} values are too many for one store (stores are read whole into memory)`,
    "import fewer rows, e.g. a subset of the parts",
  );
  const data = new Float32Array(n * d);
  let row = 0;
  for (const inp of inputs) {
    await inp.read(data, row);
    row += inp.n;
  }
  return { n, d, data, inputs };
}

/** Open, read and concatenate input files into one [N, D] float32 matrix. */
export async function loadArrays(
  paths: string[],
  opts: InputOptions = {},
  what = "inputs",
): Promise<ArrayData> {
  return readInputs(await openInputs(paths, opts, what));
}

async function exists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/** Refuse to touch `dir` unless it is absent, or an activation store and `overwrite` is set. */
async function checkTarget(dir: string, overwrite: boolean): Promise<void> {
  const st = await exists(dir);
  if (!st) return;
  const isStore = st.isDirectory && (await exists(join(dir, "header.json"))) !== null;
  if (!isStore) {
    let empty = st.isDirectory;
    if (empty) {
      for await (const _ of Deno.readDir(dir)) {
        empty = false;
        break;
      }
    }
    check(empty, `refusing to write a store to ${dir}: it exists and is not an activation store`);
    return;
  }
  check(
    overwrite,
    `${dir} already holds an activation store`,
    "pass --overwrite to replace it (the old store stays intact until the new one is complete)",
  );
}

export interface ImportStoreOptions extends InputOptions {
  dtype?: StoreDType;
  meta?: Record<string, unknown>;
  /** Replace an existing store at the target. */
  overwrite?: boolean;
  /** Rows per shard (default: writeStore's). */
  shardRows?: number;
}

function importMeta(
  inputs: ArrayInput[],
  extra: Record<string, unknown> | undefined,
): Record<string, unknown> {
  return {
    import: {
      tool: "monobench import",
      files: inputs.map((i) => ({ file: basename(i.path), rows: i.n, format: i.format })),
    },
    ...extra,
  };
}

/** Convert input files into one activation store at `outDir`. */
export async function importStore(
  paths: string[],
  outDir: string,
  opts: ImportStoreOptions = {},
): Promise<{ header: StoreHeader; inputs: ArrayInput[] }> {
  await checkTarget(outDir, opts.overwrite ?? false);
  const inputs = await openInputs(paths, opts);
  const header = await writeInputs(inputs, outDir, {
    dtype: opts.dtype,
    meta: importMeta(inputs, opts.meta),
    shardRows: opts.shardRows,
  });
  return { header, inputs };
}

// ---------------------------------------------------------------------------------------------
// Manifests

export interface LayerSpec {
  layer: string;
  sourceLayer?: string;
  /** Training activations; absent for an evaluation-only manifest (measure, measure-reference). */
  train?: string[];
  eval: string[];
}

export interface SimilaritySpec {
  name: string;
  eval: string[];
}

export interface ManifestSpec {
  /** Path of the manifest JSON to write. */
  manifest: string;
  /** Directory for the stores (default: `<manifest dir>/<manifest name>-stores`). */
  storesDir?: string;
  description?: string;
  /** The paper model the activations come from (fixtures' `model` column), written as "model". */
  model?: string;
  layers: LayerSpec[];
  similarity: SimilaritySpec[];
}

function splitFiles(v: string, what: string): string[] {
  const files = v.split("+").map((s) => s.trim());
  check(files.length > 0 && files.every((f) => f.length > 0), `${what}: empty file name in "${v}"`);
  return files;
}

/**
 * Parse `LAYER:[train=FILES,]eval=FILES[,source=NAME]` (FILES: `a.npy` or `a.npy+b.npy`,
 * wildcards allowed), e.g. `last:train=acts/last_train.npy,eval=acts/last_val.npy`. Without train=
 * the layer can be measured but not trained on.
 */
export function parseLayerSpec(s: string): LayerSpec {
  const usage = "expected LAYER:[train=FILES,]eval=FILES[,source=NAME]";
  const colon = s.indexOf(":");
  check(colon > 0, `--layer "${s}": ${usage}`);
  const layer = s.slice(0, colon).trim();
  check(
    LAYER_NAME_PATTERN.test(layer),
    `--layer "${s}": layer name "${layer}" must be letters, digits, "_" or "." (e.g. 11, last, block_7)`,
    '"last" means the final projection; record your model\'s own name for it with source=NAME',
  );
  const fields = new Map<string, string>();
  for (const part of s.slice(colon + 1).split(",")) {
    const eq = part.indexOf("=");
    check(eq > 0, `--layer "${s}": "${part}" is not key=value; ${usage}`);
    const k = part.slice(0, eq).trim(), v = part.slice(eq + 1).trim();
    check(["train", "eval", "source"].includes(k), `--layer "${s}": unknown key "${k}"; ${usage}`);
    check(!fields.has(k), `--layer "${s}": "${k}" is given twice`);
    fields.set(k, v);
  }
  check(fields.has("eval"), `--layer "${s}": needs eval=; ${usage}`);
  const source = fields.get("source");
  check(source === undefined || source.length > 0, `--layer "${s}": empty source=`);
  return {
    layer,
    sourceLayer: source,
    train: fields.has("train") ? splitFiles(fields.get("train")!, `--layer ${layer} train`) : undefined,
    eval: splitFiles(fields.get("eval")!, `--layer ${layer} eval`),
  };
}

/** Parse `NAME=FILES`, e.g. `dinov2=emb/dinov2_val.npy`. */
export function parseSimilaritySpec(s: string): SimilaritySpec {
  const eq = s.indexOf("=");
  check(eq > 0, `--similarity "${s}": expected NAME=FILES, e.g. dinov2=emb/dinov2_val.npy`);
  const name = s.slice(0, eq).trim();
  check(
    /^[\w.-]+$/.test(name),
    `--similarity "${s}": name "${name}" must be a simple name (letters, digits, . _ -)`,
  );
  return { name, eval: splitFiles(s.slice(eq + 1), `--similarity ${name}`) };
}

export interface ManifestImportOptions extends InputOptions {
  dtype?: StoreDType;
  meta?: Record<string, unknown>;
  overwrite?: boolean;
  shardRows?: number;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface ImportedStore {
  role: string;
  dir: string;
  header: StoreHeader;
  inputs: ArrayInput[];
}

function randomTag(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

function relPath(from: string, to: string): string {
  const r = relative(from, to);
  return (r === "" ? "." : r).split(SEPARATOR).join("/");
}

/**
 * Convert the files of a manifest spec into stores (`<layer>-train`, `<layer>-eval`,
 * `sim-<name>` under the stores directory) and write the manifest (paths relative to it).
 * All shapes are checked before any data is read; all stores are staged and only swapped into
 * place when every one was written. Returns the manifest path and the stores.
 */
export async function importManifest(
  spec: ManifestSpec,
  opts: ManifestImportOptions = {},
): Promise<{ manifest: string; stores: ImportedStore[] }> {
  const log = opts.log ?? (() => {});
  const manifest = resolve(spec.manifest);
  check(spec.layers.length > 0, "a manifest needs at least one --layer");
  check(
    spec.similarity.length > 0,
    "a manifest needs at least one --similarity source",
    "MS needs embeddings of the evaluation images from a similarity encoder, e.g. --similarity dinov2=emb.npy",
  );
  const mDir = dirname(manifest);
  const stem = basename(manifest).replace(/\.json$/i, "");
  const storesDir = resolve(spec.storesDir ?? join(mDir, `${stem}-stores`));
  const mSt = await exists(manifest);
  if (mSt) {
    check(!mSt.isDirectory, `manifest path ${spec.manifest} is a directory`);
    check(
      opts.overwrite,
      `${spec.manifest} already exists`,
      "pass --overwrite to replace it and its stores",
    );
  }

  // 1. Open everything (headers only for npy/raw) and check shapes.
  const seenLayers = new Set<string>();
  const planned: { role: string; dir: string; inputs: ArrayInput[]; meta: Record<string, unknown> }[] = [];
  const layerShapes: { layer: string; d: number; evalN: number; evalFrom: string }[] = [];
  for (const l of spec.layers) {
    check(!seenLayers.has(l.layer), `layer ${l.layer} is given twice`);
    seenLayers.add(l.layer);
    const train = l.train ? await openInputs(l.train, opts, `layer ${l.layer} train`) : null;
    const ev = await openInputs(l.eval, opts, `layer ${l.layer} eval`);
    if (train && train[0].d !== ev[0].d) {
      throw new MonobenchError(
        `layer ${l.layer}: the train files have D = ${train[0].d} but the eval files have D = ${ev[0].d}`,
        "train and eval activations must come from the same layer of the same model",
      );
    }
    const evalN = ev.reduce((s, x) => s + x.n, 0);
    layerShapes.push({ layer: l.layer, d: ev[0].d, evalN, evalFrom: ev.map((e) => e.path).join("+") });
    const common = { layer: l.layer, sourceLayer: l.sourceLayer ?? l.layer };
    if (train) {
      planned.push({
        role: `layer ${l.layer} train`,
        dir: join(storesDir, `${l.layer}-train`),
        inputs: train,
        meta: { ...common, split: "train" },
      });
    }
    planned.push({
      role: `layer ${l.layer} eval`,
      dir: join(storesDir, `${l.layer}-eval`),
      inputs: ev,
      meta: { ...common, split: "eval" },
    });
  }
  const seenSim = new Set<string>();
  for (const s of spec.similarity) {
    check(!seenSim.has(s.name), `similarity source "${s.name}" is given twice`);
    seenSim.add(s.name);
    const inputs = await openInputs(s.eval, opts, `similarity ${s.name}`);
    const n = inputs.reduce((a, x) => a + x.n, 0);
    for (const l of layerShapes) {
      if (n !== l.evalN) {
        throw new MonobenchError(
          `similarity "${s.name}" has ${n} rows (${
            inputs.map((i) => i.path).join("+")
          }) but layer ${l.layer}'s eval split has ${l.evalN} (${l.evalFrom})`,
          "MS pairs each evaluation image's activations with the embedding of the same image: the eval " +
            "activations and every similarity embedding must list the same images in the same order",
        );
      }
    }
    planned.push({
      role: `similarity ${s.name}`,
      dir: join(storesDir, `sim-${s.name}`),
      inputs,
      meta: { similarity: s.name, split: "eval" },
    });
  }
  for (const p of planned) await checkTarget(p.dir, opts.overwrite ?? false);

  // 2. Convert into staging stores.
  const tag = randomTag();
  const staged: { p: (typeof planned)[number]; stage: string; header: StoreHeader }[] = [];
  try {
    for (const p of planned) {
      const stage = `${p.dir}.import-${tag}.tmp`;
      log(`${p.role}: reading ${p.inputs.length} file(s)`);
      const header = await writeInputs(p.inputs, stage, {
        dtype: opts.dtype,
        meta: { ...importMeta(p.inputs, opts.meta), ...p.meta },
        shardRows: opts.shardRows,
      });
      staged.push({ p, stage, header });
    }
    // 3. Swap the stores into place, then write the manifest.
    for (const s of staged) {
      await swapInto(s.stage, s.p.dir);
      s.stage = "";
    }
  } finally {
    for (const s of staged) if (s.stage) await Deno.remove(s.stage, { recursive: true }).catch(() => {});
  }
  const rel = (role: string) => relPath(mDir, planned.find((p) => p.role === role)!.dir);
  const m = {
    description: spec.description ?? `imported activations (${spec.layers.map((l) => l.layer).join(", ")})`,
    ...(spec.model !== undefined ? { model: spec.model } : {}),
    layers: spec.layers.map((l) => ({
      layer: l.layer,
      sourceLayer: l.sourceLayer ?? l.layer,
      ...(l.train ? { train: rel(`layer ${l.layer} train`) } : {}),
      eval: rel(`layer ${l.layer} eval`),
    })),
    similarity: spec.similarity.map((s) => ({ name: s.name, eval: rel(`similarity ${s.name}`) })),
  };
  await Deno.mkdir(mDir, { recursive: true });
  await atomicWrite(manifest, JSON.stringify(m, null, 2) + "\n");
  return {
    manifest,
    stores: staged.map((s) => ({ role: s.p.role, dir: s.p.dir, header: s.header, inputs: s.p.inputs })),
  };
}

/** Move the complete store `stage` to `dir`, replacing a store there (old one removed last). */
async function swapInto(stage: string, dir: string): Promise<void> {
  if (await exists(dir)) {
    const old = `${dir}.old-${randomTag()}.tmp`;
    await Deno.rename(dir, old);
    try {
      await Deno.rename(stage, dir);
    } catch (e) {
      await Deno.rename(old, dir);
      throw e;
    }
    await Deno.remove(old, { recursive: true }).catch(() => {});
  } else {
    await Deno.rename(stage, dir);
  }
}

/**
 * A matrix for `measure`: an activation store directory, a .npy / .pt / .csv file, or a
 * directory of part files, read into memory.
 */
export interface Matrix {
  /** Path as given. */
  path: string;
  n: number;
  d: number;
  /** Content hash for stores (null for files). */
  sha256: string | null;
  all(): Float32Array;
}

/** Open an activation store, or read a .npy/.pt/.csv file or part directory ({@link loadArrays}). */
export async function openMatrix(path: string, what: string): Promise<Matrix> {
  const st = await exists(path);
  if (!st) throw new MonobenchError(`${what}: not found: ${path}`);
  if (st.isDirectory && (await exists(join(path, "header.json")))) {
    const s = await ActivationStore.open(path);
    return { path, n: s.n, d: s.d, sha256: s.sha256, all: () => s.all() };
  }
  if (st.isDirectory) {
    let any = false;
    for (const e of await listDir(path)) {
      if (e.isFile && PART_EXT.has(extname(e.name).toLowerCase())) any = true;
    }
    check(
      any,
      `${what}: ${path} is neither an activation store (no header.json) nor a directory of part files`,
    );
  }
  const ext = extname(path).toLowerCase();
  check(
    st.isDirectory || [".npy", ".pt", ".pth", ".csv"].includes(ext),
    `${what}: ${path} is neither an activation store directory nor a .npy/.pt/.csv file`,
    "convert other formats first with `deno task import`",
  );
  const a = await loadArrays([path], {}, what);
  return { path, n: a.n, d: a.d, sha256: null, all: () => a.data };
}

/** Parse `key=value` pairs (repeatable --meta) into an object of strings. */
export function parseMeta(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf("=");
    check(eq > 0, `--meta "${p}": expected key=value`);
    const k = p.slice(0, eq).trim();
    check(k.length > 0 && k !== "import", `--meta "${p}": bad key "${k}"`);
    out[k] = p.slice(eq + 1);
  }
  return out;
}

/** Parse `N,D` (N may be `auto`, `?` or -1: inferred from the file size, returned as -1). */
export function parseShape(s: string): [number, number] {
  const m = /^\s*(-1|\d+|auto|\?|_)\s*[,x×]\s*(\d+)\s*$/i.exec(s);
  check(
    m !== null,
    `--shape "${s}": expected N,D (e.g. 50000,1024, or auto,1024 to infer N from the file size)`,
  );
  const n = /^\d+$/.test(m[1]) ? Number(m[1]) : -1, d = Number(m[2]);
  check(n === -1 || n >= 1, `--shape "${s}": N must be ≥ 1 or auto`);
  check(d >= 1, `--shape "${s}": D must be ≥ 1`);
  return [n, d];
}
