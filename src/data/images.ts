/**
 * Image loading and preprocessing.
 *
 * - {@link decodeImage}: PNG (pngjs; 16-bit is rescaled to 8-bit, palette/gray expanded) and
 *   JPEG (jpeg-js, strict decoding) → 8-bit RGB. Alpha is dropped (like PIL `convert("RGB")`).
 * - {@link listImageFiles} / {@link loadImageFolder}: recursive folder walk, files sorted by their
 *   relative path (code-point order), class = first sub-folder under the root (torchvision
 *   `ImageFolder` convention; files directly in the root get class "").
 * - {@link clipPreprocess}: the HF `CLIPImageProcessor` recipe — resize the shortest side to S
 *   with PIL-style bicubic (a = −0.5, antialiased when downscaling, 8-bit intermediate like
 *   PIL's fixed-point code), center crop S×S, scale to [0, 1], normalise with the CLIP
 *   mean/std → NCHW float32.
 * - {@link nsfwjsPreprocess}: what nsfwjs does before its models — pixels / 255, then
 *   `tf.image.resizeBilinear(…, [S, S], alignCorners = true)` (aspect ratio not kept) → NHWC.
 */
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import { Buffer } from "node:buffer";
import { join, relative, sep } from "node:path";
import { check, MonobenchError } from "../util/errors.ts";

/** An 8-bit RGB image, row-major interleaved (length width · height · 3). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg"] as const;

function toRgb(width: number, height: number, src: Uint8Array, what: string): RgbImage {
  const px = width * height;
  check(px > 0, `${what}: empty image`);
  const ch = src.length / px;
  const data = new Uint8Array(px * 3);
  if (ch === 3) data.set(src.subarray(0, px * 3));
  else if (ch === 4) {
    for (let i = 0; i < px; i++) {
      data[3 * i] = src[4 * i];
      data[3 * i + 1] = src[4 * i + 1];
      data[3 * i + 2] = src[4 * i + 2];
    }
  } else if (ch === 1) {
    for (let i = 0; i < px; i++) data[3 * i] = data[3 * i + 1] = data[3 * i + 2] = src[i];
  } else {
    throw new MonobenchError(`${what}: unexpected decoded size (${src.length} bytes for ${width}×${height})`);
  }
  return { width, height, data };
}

/** Decode PNG or JPEG bytes (detected by signature) to RGB; `name` is used in error messages. */
export function decodeImage(bytes: Uint8Array, name = "image"): RgbImage {
  const isPng = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e &&
    bytes[3] === 0x47;
  const isJpeg = bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  try {
    if (isPng) {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return toRgb(
        png.width,
        png.height,
        new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.length),
        name,
      );
    }
    if (isJpeg) {
      const img = jpeg.decode(bytes, {
        useTArray: true,
        formatAsRGBA: false,
        tolerantDecoding: false,
        maxMemoryUsageInMB: 1024,
      });
      return toRgb(img.width, img.height, img.data, name);
    }
  } catch (e) {
    if (e instanceof MonobenchError) throw e;
    throw new MonobenchError(`cannot decode image ${name}: ${(e as Error)?.message ?? e}`);
  }
  throw new MonobenchError(`cannot decode image ${name}: not a PNG or JPEG file`);
}

/** Read and decode an image file. */
export async function readImage(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new MonobenchError(`cannot read image ${path}: ${(e as Error).message}`);
  }
  return decodeImage(bytes, path);
}

export interface ImageFile {
  path: string;
  /** Path relative to the root, with "/" separators. */
  rel: string;
  /** First sub-folder under the root ("" for files directly in the root). */
  cls: string;
}

/** All .png/.jpg/.jpeg files under `root` (recursive), sorted by relative path. */
export async function listImageFiles(root: string): Promise<ImageFile[]> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(root);
  } catch {
    throw new MonobenchError(`image folder not found: ${root}`);
  }
  check(st.isDirectory, `image folder ${root} is not a directory`);
  const out: ImageFile[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      let isDir = e.isDirectory, isFile = e.isFile;
      if (e.isSymlink) {
        const s = await Deno.stat(p).catch(() => null);
        isDir = s?.isDirectory ?? false;
        isFile = s?.isFile ?? false;
      }
      if (isDir) await walk(p);
      else if (isFile && IMAGE_EXTENSIONS.some((x) => e.name.toLowerCase().endsWith(x))) {
        const rel = relative(root, p).split(sep).join("/");
        const parts = rel.split("/");
        out.push({ path: p, rel, cls: parts.length > 1 ? parts[0] : "" });
      }
    }
  };
  await walk(root);
  out.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return out;
}

// ---------------------------------------------------------------------------------------------
// PIL-style bicubic resampling (Pillow's Resample.c semantics for 8-bit images)

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

function bicubicFilter(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Per output pixel: first input index and fixed-point integer weights. */
function resampleCoeffs(inSize: number, outSize: number): { start: Int32Array; weights: Int32Array[] } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 2 * filterscale;
  const start = new Int32Array(outSize);
  const weights: Int32Array[] = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    const kk = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0 ? k[x] / ww : 0;
      kk[x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    start[xx] = xmin;
    weights.push(kk);
  }
  return { start, weights };
}

function clip8(ss: number): number {
  if (ss >= ONE * 256) return 255;
  if (ss <= 0) return 0;
  return Math.floor(ss / ONE);
}

/** Resize with Pillow's BICUBIC filter (horizontal pass, then vertical, 8-bit in between). */
export function resizeBicubic(img: RgbImage, outW: number, outH: number): RgbImage {
  check(
    outW >= 1 && outH >= 1 && Number.isInteger(outW) && Number.isInteger(outH),
    `bad resize ${outW}×${outH}`,
  );
  const { width: w, height: h } = img;
  let src = img.data;
  let cw = w;
  if (outW !== w) {
    const { start, weights } = resampleCoeffs(w, outW);
    const dst = new Uint8Array(outW * h * 3);
    for (let y = 0; y < h; y++) {
      const row = y * w * 3;
      for (let x = 0; x < outW; x++) {
        const k = weights[x], x0 = start[x];
        for (let c = 0; c < 3; c++) {
          let ss = ONE / 2;
          for (let i = 0; i < k.length; i++) ss += src[row + (x0 + i) * 3 + c] * k[i];
          dst[(y * outW + x) * 3 + c] = clip8(ss);
        }
      }
    }
    src = dst;
    cw = outW;
  }
  if (outH !== h) {
    const { start, weights } = resampleCoeffs(h, outH);
    const dst = new Uint8Array(cw * outH * 3);
    for (let y = 0; y < outH; y++) {
      const k = weights[y], y0 = start[y];
      for (let x = 0; x < cw * 3; x++) {
        let ss = ONE / 2;
        for (let i = 0; i < k.length; i++) ss += src[(y0 + i) * cw * 3 + x] * k[i];
        dst[y * cw * 3 + x] = clip8(ss);
      }
    }
    src = dst;
  }
  return { width: outW, height: outH, data: src === img.data ? img.data.slice() : src };
}

/** HF `get_resize_output_image_size` for `shortest_edge = size`: [width, height]. */
export function shortestEdgeSize(width: number, height: number, size: number): [number, number] {
  if (width <= height) return [size, Math.trunc(size * height / width)];
  return [Math.trunc(size * width / height), size];
}

/**
 * CLIP preprocessing of one image into `dst` (length 3·S·S, NCHW plane order R, G, B) starting at
 * `offset`; returns `dst`.
 */
export function clipPreprocess(
  img: RgbImage,
  size: number,
  dst: Float32Array = new Float32Array(3 * size * size),
  offset = 0,
): Float32Array {
  const [rw, rh] = shortestEdgeSize(img.width, img.height, size);
  const r = resizeBicubic(img, rw, rh);
  const top = Math.floor((rh - size) / 2), left = Math.floor((rw - size) / 2);
  const plane = size * size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const s = ((y + top) * rw + (x + left)) * 3;
      for (let c = 0; c < 3; c++) {
        dst[offset + c * plane + y * size + x] = (r.data[s + c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c];
      }
    }
  }
  return dst;
}

/**
 * `tf.image.resizeBilinear(x, [outH, outW], alignCorners = true)` (halfPixelCenters false) of an
 * HWC float image, computed like the TF.js CPU kernel; writes into `dst` at `offset`.
 */
export function resizeBilinearAlignCorners(
  src: Float32Array,
  h: number,
  w: number,
  c: number,
  outH: number,
  outW: number,
  dst = new Float32Array(outH * outW * c),
  offset = 0,
): Float32Array {
  const hs = outH > 1 ? (h - 1) / (outH - 1) : h / outH;
  const ws = outW > 1 ? (w - 1) / (outW - 1) : w / outW;
  let o = offset;
  for (let y = 0; y < outH; y++) {
    const fy = hs * y;
    const y0 = Math.floor(fy), dy = fy - y0, y1 = Math.min(h - 1, Math.ceil(fy));
    for (let x = 0; x < outW; x++) {
      const fx = ws * x;
      const x0 = Math.floor(fx), dx = fx - x0, x1 = Math.min(w - 1, Math.ceil(fx));
      const a = (y0 * w + x0) * c, b = (y0 * w + x1) * c, p = (y1 * w + x0) * c, q = (y1 * w + x1) * c;
      for (let k = 0; k < c; k++) {
        const top = src[a + k] + (src[b + k] - src[a + k]) * dx;
        const bottom = src[p + k] + (src[q + k] - src[p + k]) * dx;
        dst[o++] = top + (bottom - top) * dy;
      }
    }
  }
  return dst;
}

/**
 * nsfwjs preprocessing of one image into `dst` (length S·S·3, NHWC) at `offset`: values / 255
 * (float32), then bilinear resize with aligned corners to S×S.
 */
export function nsfwjsPreprocess(
  img: RgbImage,
  size: number,
  dst = new Float32Array(size * size * 3),
  offset = 0,
): Float32Array {
  const x = new Float32Array(img.data.length);
  for (let i = 0; i < x.length; i++) x[i] = img.data[i] / 255;
  return resizeBilinearAlignCorners(x, img.height, img.width, 3, size, size, dst, offset);
}

export type Preprocess = "clip" | "nsfwjs";

export interface LoadFolderOptions {
  /** Preprocessing recipe (default "clip"). */
  preprocess?: Preprocess;
  /** Output size S (default 224). */
  size?: number;
  /** What to do with unreadable/corrupt files: "throw" (default) or "skip" (with onWarn). */
  onError?: "throw" | "skip";
  onWarn?: (message: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export interface ImageFolder {
  /** Files loaded (skipped ones excluded), in order. */
  files: ImageFile[];
  /** Sorted class names. */
  classes: string[];
  /** Class index of each file. */
  labels: Int32Array;
  /** [n, 3, S, S] for "clip", [n, S, S, 3] for "nsfwjs". */
  data: Float32Array;
  dims: [number, number, number, number];
  layout: "NCHW" | "NHWC";
}

/** Load and preprocess every image under `root` (see {@link listImageFiles}). */
export async function loadImageFolder(root: string, opts: LoadFolderOptions = {}): Promise<ImageFolder> {
  const pre = opts.preprocess ?? "clip";
  check(pre === "clip" || pre === "nsfwjs", `unknown preprocessing ${JSON.stringify(pre)}`);
  const size = opts.size ?? 224;
  check(Number.isInteger(size) && size >= 1, `bad image size ${size}`);
  const all = await listImageFiles(root);
  if (all.length === 0) throw new MonobenchError(`no .png/.jpg/.jpeg images found under ${root}`);
  const per = 3 * size * size;
  const chunks: Float32Array[] = [];
  const files: ImageFile[] = [];
  for (const [i, f] of all.entries()) {
    let img: RgbImage;
    try {
      img = await readImage(f.path);
    } catch (e) {
      if (opts.onError === "skip" && e instanceof MonobenchError) {
        opts.onWarn?.(`skipping ${f.path}: ${e.message}`);
        continue;
      }
      throw e;
    }
    const buf = new Float32Array(per);
    if (pre === "clip") clipPreprocess(img, size, buf);
    else nsfwjsPreprocess(img, size, buf);
    chunks.push(buf);
    files.push(f);
    opts.onProgress?.(i + 1, all.length);
  }
  if (files.length === 0) throw new MonobenchError(`no readable images under ${root}`);
  const classes = [...new Set(files.map((f) => f.cls))].sort();
  const index = new Map(classes.map((c, i) => [c, i]));
  const data = new Float32Array(files.length * per);
  chunks.forEach((c, i) => data.set(c, i * per));
  return {
    files,
    classes,
    labels: Int32Array.from(files, (f) => index.get(f.cls)!),
    data,
    dims: pre === "clip" ? [files.length, 3, size, size] : [files.length, size, size, 3],
    layout: pre === "clip" ? "NCHW" : "NHWC",
  };
}
