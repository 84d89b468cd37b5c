import { deepStrictEqual, equal, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import { MonobenchError } from "../src/util/errors.ts";
import {
  CLIP_MEAN,
  CLIP_STD,
  clipPreprocess,
  decodeImage,
  listImageFiles,
  loadImageFolder,
  nsfwjsPreprocess,
  resizeBicubic,
  resizeBilinearAlignCorners,
  type RgbImage,
  shortestEdgeSize,
} from "../src/data/images.ts";

function pngBytes(w: number, h: number, rgba: (x: number, y: number) => [number, number, number, number]) {
  const p = new PNG({ width: w, height: h });
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [r, g, b, a] = rgba(x, y);
      const i = (y * w + x) * 4;
      p.data[i] = r;
      p.data[i + 1] = g;
      p.data[i + 2] = b;
      p.data[i + 3] = a;
    }
  }
  return new Uint8Array(PNG.sync.write(p));
}

function jpegBytes(w: number, h: number, rgb: [number, number, number]) {
  const data = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) data.set([...rgb, 255], 4 * i);
  return new Uint8Array(jpeg.encode({ width: w, height: h, data }, 95).data);
}

function solid(w: number, h: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) data.set(rgb, 3 * i);
  return { width: w, height: h, data };
}

async function withFolder(fn: (root: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "monobench-images-" });
  try {
    await fn(root);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

function hex(s: string): number[] {
  return Array.from({ length: s.length / 2 }, (_, i) => parseInt(s.slice(2 * i, 2 * i + 2), 16));
}

Deno.test("images: bicubic resize is bit-identical to Pillow 9.4 Image.resize(BICUBIC)", () => {
  // Input: 7×5 RGB with byte i = (37 i + 11) mod 256. Expected bytes from Pillow 9.4.0:
  //   Image.frombytes("RGB", (7, 5), data).resize((w, h), Image.BICUBIC, reducing_gap=None)
  const img: RgbImage = {
    width: 7,
    height: 5,
    data: Uint8Array.from({ length: 105 }, (_, i) => (37 * i + 11) % 256),
  };
  const down = resizeBicubic(img, 3, 4);
  deepStrictEqual(
    Array.from(down.data),
    hex("665482a07e5c7aa89b745f8daf8d6a85b67b5b70998b697b969d454e7fa4775586a59056"),
  );
  const up = resizeBicubic(img, 11, 9);
  const upWant =
    "02274c32658a8499bedc294ebb2352577ca1a6d53daacf1c3a5f746e93c6acd1f6052a4f35688d879cc1df2c51be2655" +
    "5a7fa4a9d840add21f3d62777196ceafd4ff0b30553b6e938da2c7e53257c42c5b6085aaafde46b3d82543687c779cd5" +
    "b5daff10355a3f739893a7ccf6375cd33060658aafb3ed4bb8e92d486e867ca093badf92153a5f45789d97acd1ef3c61" +
    "ce36656a8fb4b9e850bde2364d729181a643bfe4001a3f64527da293b1d679416667416a6f94b9c48155c26c3b526e97" +
    "86b340c4e9001f44695e82a790b6db18466b134b6f7499bece2d5ac70b40576b9b8bbf4dc9ee01254a6f6388ad96bce1" +
    "1f4c711a50757a9fc4d33460cd12465d71a191c453cff407284d72668bb09abfe42a4f742453787da2c7d63e63d01d49" +
    "6075a494c756d2f70a";
  deepStrictEqual(Array.from(up.data), hex(upWant));
  equal(up.data.length, 11 * 9 * 3);
  deepStrictEqual(resizeBicubic(img, 7, 5).data, img.data);
});

Deno.test("images: CLIP preprocessing — shortest side, center crop, normalisation, NCHW", () => {
  deepStrictEqual(shortestEdgeSize(640, 480, 224), [298, 224]);
  deepStrictEqual(shortestEdgeSize(480, 640, 224), [224, 298]);
  deepStrictEqual(shortestEdgeSize(100, 100, 224), [224, 224]);
  // A constant image stays constant; check the normalisation and the plane order.
  const out = clipPreprocess(solid(50, 30, [200, 100, 0]), 16);
  equal(out.length, 3 * 16 * 16);
  const want = [200, 100, 0].map((v, c) => (v / 255 - CLIP_MEAN[c]) / CLIP_STD[c]);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < 256; i++) ok(Math.abs(out[c * 256 + i] - want[c]) < 1e-6);
  }
  // Center crop of a wide image: left third red, middle third green, right third blue.
  const w = 90, h = 30;
  const img = solid(w, h, [0, 0, 0]);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      img.data.set(x < 30 ? [255, 0, 0] : x < 60 ? [0, 255, 0] : [0, 0, 255], (y * w + x) * 3);
    }
  }
  const s = 30; // no resize (shortest side is already 30): crop columns 30..59 = all green
  const crop = clipPreprocess(img, s);
  const greenPlane = crop.subarray(s * s, 2 * s * s);
  ok(greenPlane.every((v) => Math.abs(v - (1 - CLIP_MEAN[1]) / CLIP_STD[1]) < 1e-6));
  // Writing at an offset into a batch buffer.
  const batch = new Float32Array(2 * 3 * 16 * 16);
  clipPreprocess(solid(20, 20, [200, 100, 0]), 16, batch, 3 * 16 * 16);
  deepStrictEqual(batch.subarray(3 * 256), out);
});

Deno.test("images: bilinear alignCorners resize and nsfwjs preprocessing (NHWC, /255)", () => {
  // 1×2 → 1×3: corners kept, midpoint interpolated.
  deepStrictEqual(Array.from(resizeBilinearAlignCorners(Float32Array.of(0, 1), 1, 2, 1, 1, 3)), [0, 0.5, 1]);
  // 2×2 → 3×3 center is the mean of the four.
  const r = resizeBilinearAlignCorners(Float32Array.of(0, 4, 8, 12), 2, 2, 1, 3, 3);
  deepStrictEqual(Array.from(r), [0, 2, 4, 4, 6, 8, 8, 10, 12]);
  const img = solid(3, 2, [255, 51, 0]);
  img.data.set([0, 0, 0], 0);
  const x = nsfwjsPreprocess(img, 5);
  equal(x.length, 5 * 5 * 3);
  deepStrictEqual(Array.from(x.subarray(0, 3)), [0, 0, 0]); // top-left corner kept
  const last = x.subarray(x.length - 3);
  deepStrictEqual(Array.from(last), [1, Math.fround(51 / 255), 0]); // bottom-right corner, channels last
});

Deno.test("images: PNG/JPEG decoding (RGBA → RGB), unsupported and corrupt input", () => {
  const p = decodeImage(pngBytes(2, 1, (x) => (x === 0 ? [10, 20, 30, 0] : [40, 50, 60, 255])), "a.png");
  deepStrictEqual([p.width, p.height, ...p.data], [2, 1, 10, 20, 30, 40, 50, 60]);
  const j = decodeImage(jpegBytes(8, 8, [200, 30, 90]), "b.jpg");
  equal(j.data.length, 8 * 8 * 3);
  ok(Math.abs(j.data[0] - 200) <= 3 && Math.abs(j.data[1] - 30) <= 3 && Math.abs(j.data[2] - 90) <= 3);
  throws(() => decodeImage(new TextEncoder().encode("GIF89a..."), "c.gif"), /c\.gif: not a PNG or JPEG/);
  const png = pngBytes(4, 4, () => [1, 2, 3, 255]);
  throws(() => decodeImage(png.subarray(0, 30), "trunc.png"), (e: unknown) => {
    ok(e instanceof MonobenchError && /cannot decode image trunc\.png/.test(e.message), String(e));
    return true;
  });
  const jp = jpegBytes(16, 16, [1, 2, 3]);
  throws(() => decodeImage(jp.subarray(0, jp.length / 2), "trunc.jpg"), MonobenchError);
});

Deno.test("images: folder loader — recursive, sorted, classes from sub-folders, corrupt files", async () => {
  await withFolder(async (root) => {
    await Deno.mkdir(join(root, "dogs", "puppies"), { recursive: true });
    await Deno.mkdir(join(root, "cats"));
    await Deno.writeFile(join(root, "dogs", "b.png"), pngBytes(6, 4, () => [255, 0, 0, 255]));
    await Deno.writeFile(join(root, "dogs", "a.JPG"), jpegBytes(5, 5, [0, 255, 0]));
    await Deno.writeFile(join(root, "dogs", "puppies", "c.png"), pngBytes(3, 9, () => [0, 0, 255, 128]));
    await Deno.writeFile(join(root, "cats", "z.jpeg"), jpegBytes(7, 3, [128, 128, 128]));
    await Deno.writeTextFile(join(root, "cats", "notes.txt"), "ignored");
    const files = await listImageFiles(root);
    deepStrictEqual(files.map((f) => f.rel), [
      "cats/z.jpeg",
      "dogs/a.JPG",
      "dogs/b.png",
      "dogs/puppies/c.png",
    ]);
    deepStrictEqual(files.map((f) => f.cls), ["cats", "dogs", "dogs", "dogs"]);

    const clip = await loadImageFolder(root, { size: 8 });
    deepStrictEqual(clip.classes, ["cats", "dogs"]);
    deepStrictEqual(Array.from(clip.labels), [0, 1, 1, 1]);
    deepStrictEqual(clip.dims, [4, 3, 8, 8]);
    equal(clip.layout, "NCHW");
    ok(clip.data.every(Number.isFinite));
    // dogs/b.png is pure red: R plane = (1 − mean) / std.
    const b = clip.data.subarray(2 * 192, 3 * 192);
    ok(Math.abs(b[0] - (1 - CLIP_MEAN[0]) / CLIP_STD[0]) < 1e-6);
    ok(Math.abs(b[64] - (0 - CLIP_MEAN[1]) / CLIP_STD[1]) < 1e-6);
    const ns = await loadImageFolder(root, { size: 8, preprocess: "nsfwjs" });
    deepStrictEqual(ns.dims, [4, 8, 8, 3]);
    deepStrictEqual(Array.from(ns.data.subarray(2 * 192, 2 * 192 + 3)), [1, 0, 0]);

    // A corrupt file: error naming it, or skipped with a warning.
    await Deno.writeFile(
      join(root, "cats", "broken.png"),
      new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3, 4, 5]),
    );
    await rejects(loadImageFolder(root, { size: 8 }), (e: unknown) => {
      ok(e instanceof MonobenchError && e.message.includes(join(root, "cats", "broken.png")), String(e));
      return true;
    });
    const warnings: string[] = [];
    const skipped = await loadImageFolder(root, {
      size: 8,
      onError: "skip",
      onWarn: (m) => warnings.push(m),
    });
    equal(skipped.files.length, 4);
    equal(warnings.length, 1);
    ok(warnings[0].includes("broken.png"));
  });
  await rejects(loadImageFolder("/nonexistent/monobench"), /image folder not found/);
  await withFolder(async (root) => {
    await rejects(loadImageFolder(root), /no \.png\/\.jpg\/\.jpeg images/);
  });
});
