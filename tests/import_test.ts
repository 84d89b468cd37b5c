import assert from "node:assert/strict";
import { join } from "node:path";
import { ActivationStore, writeStore } from "../src/data/store.ts";
import {
  importManifest,
  importStore,
  loadArrays,
  naturalCompare,
  parseLayerSpec,
  parseShape,
  parseSimilaritySpec,
  partNumber,
  sortByPart,
} from "../src/io/import.ts";
import { decodeNpy } from "../src/io/npy.ts";
import { StoreWriter } from "../src/io/store_writer.ts";
import { manifestData, manifestEvalData } from "../src/run/data.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { main } from "../tasks/import.ts";

/** A float32 .npy file (format 1.0, C or Fortran order), built by hand per the spec. */
function npy(n: number, d: number, vals: ArrayLike<number>, fortran = false): Uint8Array {
  let h = `{'descr': '<f4', 'fortran_order': ${fortran ? "True" : "False"}, 'shape': (${n}, ${d}), }`;
  h = h.padEnd(Math.ceil((10 + h.length + 1) / 64) * 64 - 10 - 1) + "\n";
  const out = new Uint8Array(10 + h.length + n * d * 4);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  const dv = new DataView(out.buffer);
  dv.setUint16(8, h.length, true);
  out.set(new TextEncoder().encode(h), 10);
  for (let i = 0; i < n * d; i++) {
    const [r, c] = [Math.floor(i / d), i % d];
    dv.setFloat32(10 + h.length + 4 * (fortran ? c * n + r : i), vals[i], true);
  }
  return out;
}

function randomMatrix(n: number, d: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * d }, () => rng.normal());
}

const mbErr = (...res: RegExp[]) => (e: unknown) => {
  assert.ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
  for (const re of res) assert.match(`${e.message}\nhint: ${e.hint ?? ""}`, re);
  return true;
};

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-import-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function ls(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

function capture() {
  const out: string[] = [], err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

Deno.test("import: raw float32 with --shape, and size mismatches explained", async () => {
  await withTmp(async (dir) => {
    const x = randomMatrix(10, 6, 1);
    const p = join(dir, "x.bin");
    await Deno.writeFile(p, new Uint8Array(x.buffer));
    for (const shape of [[10, 6], [-1, 6]] as [number, number][]) {
      const a = await loadArrays([p], { shape });
      assert.deepEqual([a.n, a.d], [10, 6]);
      assert.deepEqual(a.data, x);
    }
    await assert.rejects(loadArrays([p]), mbErr(/x\.bin: a raw float32 file needs its shape/, /--shape/));
    await assert.rejects(
      loadArrays([p], { shape: [12, 6] }),
      mbErr(
        /--shape 12,6 needs 288 bytes \(72 float32 values\), the file has 240 bytes \(60 values\)/,
        /10,6/,
      ),
    );
    await assert.rejects(
      loadArrays([p], { shape: [-1, 7] }),
      mbErr(/60 float32 values do not form rows of D = 7/),
    );
    await Deno.writeFile(p, new Uint8Array(7));
    await assert.rejects(
      loadArrays([p], { shape: [-1, 1] }),
      mbErr(/7 bytes is not a whole number of float32/),
    );
    // Forced format; unknown / unsupported extensions.
    await Deno.writeFile(join(dir, "y.data"), new Uint8Array(x.buffer));
    assert.deepEqual((await loadArrays([join(dir, "y.data")], { format: "raw", shape: [-1, 6] })).data, x);
    await assert.rejects(loadArrays([join(dir, "y.data")]), mbErr(/cannot tell the format/, /--format/));
    await Deno.writeFile(join(dir, "acts_part0.pt"), new Uint8Array(8));
    await assert.rejects(
      loadArrays([join(dir, "acts_part0.pt")]),
      mbErr(/acts_part0\.pt: not a torch\.save file/, /torch\.save\(obj, path\)/),
    );
    await assert.rejects(loadArrays([join(dir, "nope.npy")]), mbErr(/input file not found: .*nope\.npy/));
    await Deno.mkdir(join(dir, "empty"));
    await assert.rejects(loadArrays([join(dir, "empty")]), mbErr(/empty holds no part files/));
  });
  assert.deepEqual(parseShape("50000,1024"), [50000, 1024]);
  assert.deepEqual(parseShape("auto,8"), [-1, 8]);
  assert.deepEqual(parseShape("-1x8"), [-1, 8]);
  assert.throws(() => parseShape("8"), mbErr(/expected N,D/));
  assert.throws(() => parseShape("0,8"), mbErr(/N must be/));
});

Deno.test("import: CSV numbers only, --header, bad cells reported by line and column", async () => {
  await withTmp(async (dir) => {
    const w = async (name: string, text: string) => {
      await Deno.writeFile(join(dir, name), new TextEncoder().encode(text));
      return join(dir, name);
    };
    const ok = await w("ok.csv", '\ufeffa,b,c\r\n1,-2.5,3e-2\r\n\r\n" 4 ",.5,+6.\r\n');
    const a = await loadArrays([ok], { header: true });
    assert.deepEqual([a.n, a.d], [2, 3]);
    assert.deepEqual(a.data, Float32Array.from([1, -2.5, 0.03, 4, 0.5, 6]));
    await assert.rejects(loadArrays([ok]), mbErr(/"a" is not a number at line 1, column 1/, /--header/));
    await assert.rejects(
      loadArrays([await w("abc.csv", "1,2\n3,abc\n")]),
      mbErr(/abc\.csv: "abc" is not a number at line 2, column 2/),
    );
    await assert.rejects(
      loadArrays([await w("e.csv", "1,2\n,4\n")]),
      mbErr(/empty cell at line 2, column 1/),
    );
    await assert.rejects(
      loadArrays([await w("r.csv", "1,2\n3\n")]),
      mbErr(/r\.csv: line 2 has 1 values, the first data line has 2/),
    );
    await assert.rejects(
      loadArrays([await w("n.csv", "1,NaN\n")]),
      mbErr(/non-finite value "NaN" at line 1, column 2/),
    );
    await assert.rejects(loadArrays([await w("i.csv", "-inf,1\n")]), mbErr(/non-finite value "-inf"/));
    await assert.rejects(loadArrays([await w("h.csv", "0x10,1\n")]), mbErr(/"0x10" is not a number/));
    await assert.rejects(
      loadArrays([await w("b.csv", "1e39,1\n")]),
      mbErr(/1e39 .*beyond the float32 range/),
    );
    await assert.rejects(loadArrays([await w("z.csv", "x,y\n\n")], { header: true }), mbErr(/no data rows/));
  });
});

Deno.test("import: parts are concatenated in order, sorted by part number with --parts", async () => {
  await withTmp(async (dir) => {
    const x = randomMatrix(12, 3, 2);
    const rows = (a: number, b: number) => x.subarray(a * 3, b * 3);
    // Shards part1 (rows 0-3), part2 (4-5), part10 (6-11), the last one in Fortran order.
    await Deno.writeFile(join(dir, "acts_part1.npy"), npy(4, 3, rows(0, 4)));
    await Deno.writeFile(join(dir, "acts_part2.npy"), npy(2, 3, rows(4, 6)));
    await Deno.writeFile(join(dir, "acts_part10.npy"), npy(6, 3, rows(6, 12), true));
    const given = ["acts_part10.npy", "acts_part1.npy", "acts_part2.npy"].map((f) => join(dir, f));
    const sorted = await loadArrays(given, { parts: true });
    assert.deepEqual(sorted.data, x);
    assert.deepEqual(sorted.inputs.map((i) => i.n), [4, 2, 6]);
    const asGiven = await loadArrays(given);
    assert.deepEqual(asGiven.data.subarray(0, 18), rows(6, 12), "without --parts: argument order");
    // A wildcard expands in natural order (part2 before part10).
    assert.deepEqual((await loadArrays([join(dir, "acts_part*.npy")])).data, x);
    await assert.rejects(loadArrays([join(dir, "nomatch_*.npy")]), mbErr(/no file matches/));
    await assert.rejects(loadArrays([given[0], given[0]]), mbErr(/listed twice/));
    // Mismatched D across parts.
    await Deno.writeFile(join(dir, "acts_part3.npy"), npy(2, 4, new Float32Array(8)));
    await assert.rejects(
      loadArrays([join(dir, "acts_part1.npy"), join(dir, "acts_part3.npy")]),
      mbErr(/acts_part3\.npy has D = 4 columns but .*acts_part1\.npy has D = 3/, /same row width/),
    );
  });
  assert.equal(partNumber("/a/b7/imagenet_val_activations_clip_11_post_mlp_residual_part12.pt"), 12);
  assert.equal(partNumber("x-part_3.npy"), 3);
  assert.equal(partNumber("shard0007.npy"), 7);
  assert.equal(partNumber("acts.npy"), null);
  assert.deepEqual(sortByPart(["a_part10", "a_part9", "a_part0"]), ["a_part0", "a_part9", "a_part10"]);
  assert.throws(() => sortByPart(["a_part1", "b_part1"]), mbErr(/same part number 1/));
  assert.throws(() => sortByPart(["a_part1", "b.npy"]), mbErr(/b\.npy has no part number/));
  assert.deepEqual(["x10", "x9", "x1", "y"].sort(naturalCompare), ["x1", "x9", "x10", "y"]);
});

Deno.test("import: stores are written whole or not at all; --overwrite; f16; meta", async () => {
  await withTmp(async (dir) => {
    const x = randomMatrix(8, 4, 3);
    await Deno.writeFile(join(dir, "a.npy"), npy(8, 4, x));
    const out = join(dir, "store");
    const { header } = await importStore([join(dir, "a.npy")], out, { meta: { model: "m" }, shardRows: 3 });
    assert.equal(header.shards.length, 3);
    const s = await ActivationStore.open(out);
    await s.verify();
    assert.deepEqual(s.all(), x);
    assert.equal(s.header.meta.model, "m");
    assert.deepEqual(s.header.meta.import, {
      tool: "monobench import",
      files: [{ file: "a.npy", rows: 8, format: "npy" }],
    });
    // Existing store: refused without overwrite; a failing import leaves it intact.
    await assert.rejects(
      importStore([join(dir, "a.npy")], out),
      mbErr(/already holds an activation store/, /--overwrite/),
    );
    const bad = Float32Array.from(x);
    bad[13] = NaN;
    await Deno.writeFile(join(dir, "bad.npy"), npy(8, 4, bad));
    await assert.rejects(
      importStore([join(dir, "a.npy"), join(dir, "bad.npy")], out, { overwrite: true }),
      mbErr(/bad\.npy: non-finite value NaN at row 3, column 1/),
    );
    assert.deepEqual((await ActivationStore.open(out)).all(), x);
    assert.deepEqual(await ls(dir), ["a.npy", "bad.npy", "store"], "no temp directories left");
    await assert.rejects(
      importStore([join(dir, "bad.npy")], join(dir, "new")),
      mbErr(/non-finite/),
    );
    assert.deepEqual(await ls(dir), ["a.npy", "bad.npy", "store"]);
    // Overwrite, as f16.
    const h = await importStore([join(dir, "a.npy")], out, {
      overwrite: true,
      dtype: "f16",
    });
    assert.equal(h.header.dtype, "f16");
    const s16 = await ActivationStore.open(out);
    for (let i = 0; i < x.length; i++) {
      assert.ok(Math.abs(s16.all()[i] - x[i]) <= 2e-3 * Math.max(1, Math.abs(x[i])));
    }
    // A non-store directory is never replaced.
    await Deno.mkdir(join(dir, "other"));
    await Deno.writeTextFile(join(dir, "other", "keep.txt"), "x");
    await assert.rejects(
      importStore([join(dir, "a.npy")], join(dir, "other"), { overwrite: true }),
      mbErr(/not an activation store/),
    );
    assert.equal(await Deno.readTextFile(join(dir, "other", "keep.txt")), "x");
  });
});

Deno.test("import: manifest end to end — import, then manifestData() loads the same data", async () => {
  await withTmp(async (dir) => {
    const train = randomMatrix(20, 4, 4), ev = randomMatrix(9, 4, 5), emb = randomMatrix(9, 3, 6);
    const ev11 = randomMatrix(9, 5, 7);
    await Deno.writeFile(join(dir, "train_part0.npy"), npy(12, 4, train.subarray(0, 48)));
    await Deno.writeFile(join(dir, "train_part1.npy"), npy(8, 4, train.subarray(48)));
    await Deno.writeFile(join(dir, "val.npy"), npy(9, 4, ev, true));
    await Deno.writeFile(join(dir, "val11.bin"), new Uint8Array(ev11.buffer));
    await Deno.writeFile(join(dir, "tr11.bin"), new Uint8Array(randomMatrix(6, 5, 8).buffer));
    await Deno.writeTextFile(
      join(dir, "emb.csv"),
      "e0,e1,e2\n" +
        Array.from({ length: 9 }, (_, r) => Array.from(emb.subarray(r * 3, r * 3 + 3)).join(",")).join("\n"),
    );
    const manifest = join(dir, "out", "data.json");
    const { io, out, err } = capture();
    const code = await main([
      "--manifest",
      manifest,
      "--layer",
      `last:train=${join(dir, "train_part*.npy")},eval=${join(dir, "val.npy")},source=post_projection`,
      "--layer",
      `11:train=${join(dir, "tr11.bin")},eval=${join(dir, "val11.bin")}`,
      "--shape",
      "auto,5",
      "--similarity",
      `dino=${join(dir, "emb.csv")}`,
      "--header",
      "--description",
      "tiny test data",
      "--meta",
      "model=test",
    ], io);
    assert.equal(code, 0, err.join("\n"));
    assert.match(out.join("\n"), /manifest: .*data\.json/);
    const m = JSON.parse(await Deno.readTextFile(manifest));
    assert.deepEqual(m.layers[0], {
      layer: "last",
      sourceLayer: "post_projection",
      train: "data-stores/last-train",
      eval: "data-stores/last-eval",
    });
    assert.deepEqual(m.similarity, [{ name: "dino", eval: "data-stores/sim-dino" }]);
    const data = await manifestData(manifest);
    assert.equal(data.description, "tiny test data");
    assert.deepEqual(data.layers.map((l) => [l.layer, l.sourceLayer, l.d, l.train.n, l.eval.n]), [
      ["last", "post_projection", 4, 20, 9],
      ["11", "11", 5, 6, 9],
    ]);
    assert.deepEqual(data.layers[0].train.all(), train);
    assert.deepEqual(data.layers[0].eval.all(), ev);
    assert.deepEqual(data.layers[1].eval.all(), ev11);
    assert.deepEqual(data.similarity[0].eval.all(), emb);
    assert.equal(data.layers[0].eval.header.meta.model, "test");
    assert.equal(data.layers[0].eval.header.meta.split, "eval");
    assert.deepEqual(await ls(join(dir, "out")), ["data-stores", "data.json"]);

    // Row-count mismatch: explained, nothing written; existing manifest and stores untouched.
    const before = await Deno.readTextFile(manifest);
    await Deno.writeFile(join(dir, "emb8.npy"), npy(8, 3, emb.subarray(0, 24)));
    const spec = {
      manifest,
      layers: [parseLayerSpec(`last:train=${join(dir, "train_part0.npy")},eval=${join(dir, "val.npy")}`)],
      similarity: [parseSimilaritySpec(`dino=${join(dir, "emb8.npy")}`)],
    };
    await assert.rejects(
      importManifest(spec, { overwrite: true }),
      mbErr(
        /similarity "dino" has 8 rows .* but layer last's eval split has 9/,
        /same images in the same order/,
      ),
    );
    // A NaN in the last input fails after the first stores were staged: still nothing changes.
    const embBad = Float32Array.from(emb);
    embBad[5] = NaN;
    await Deno.writeFile(join(dir, "embbad.npy"), npy(9, 3, embBad));
    spec.similarity = [parseSimilaritySpec(`dino=${join(dir, "embbad.npy")}`)];
    await assert.rejects(
      importManifest(spec, { overwrite: true }),
      mbErr(/embbad\.npy: non-finite value NaN at row 1/),
    );
    assert.equal(await Deno.readTextFile(manifest), before);
    assert.deepEqual(await ls(join(dir, "out", "data-stores")), [
      "11-eval",
      "11-train",
      "last-eval",
      "last-train",
      "sim-dino",
    ]);
    assert.deepEqual((await manifestData(manifest)).layers[0].train.all(), train);
    // Existing manifest without --overwrite.
    spec.similarity = [parseSimilaritySpec(`dino=${join(dir, "emb.csv")}`)];
    await assert.rejects(importManifest(spec, { header: true }), mbErr(/already exists/, /--overwrite/));
    // train / eval width mismatch.
    await assert.rejects(
      importManifest({
        manifest: join(dir, "m2.json"),
        layers: [parseLayerSpec(`last:train=${join(dir, "train_part0.npy")},eval=${join(dir, "val11.bin")}`)],
        similarity: spec.similarity,
      }, { header: true, shape: [-1, 5] }),
      mbErr(/layer last: the train files have D = 4 but the eval files have D = 5/),
    );
  });
});

Deno.test("import: spec parsing and CLI errors (in-process and as a subprocess)", async () => {
  assert.deepEqual(parseLayerSpec("22:train=a.npy+b.npy,eval=c.npy"), {
    layer: "22",
    sourceLayer: undefined,
    train: ["a.npy", "b.npy"],
    eval: ["c.npy"],
  });
  // Any model's layer names; a dash would make case ids ambiguous.
  assert.equal(parseLayerSpec("16:train=a,eval=b").layer, "16");
  assert.throws(() => parseLayerSpec("a-b:train=a,eval=b"), mbErr(/layer name "a-b" must be letters/));
  assert.throws(() => parseLayerSpec("last:train=a"), mbErr(/needs eval=/));
  // Evaluation only: no train split.
  assert.deepEqual(parseLayerSpec("21:eval=c.npy,source=enc.21"), {
    layer: "21",
    sourceLayer: "enc.21",
    train: undefined,
    eval: ["c.npy"],
  });
  assert.throws(() => parseLayerSpec("last:train=a,eval=b,foo=c"), mbErr(/unknown key "foo"/));
  assert.throws(() => parseLayerSpec("last:train=a+,eval=b"), mbErr(/empty file name/));
  assert.throws(() => parseSimilaritySpec("di no=x.npy"), mbErr(/simple name/));
  assert.deepEqual(parseSimilaritySpec("clip-b32=x.npy"), { name: "clip-b32", eval: ["x.npy"] });

  const c = capture();
  assert.equal(await main(["--help"], c.io), 0);
  assert.match(c.out.join("\n"), /Usage:/);
  for (
    const [argv, re] of [
      [["--bogus"], /monobench: Unknown option '--bogus'/],
      [["x.npy"], /--out DIR is required/],
      [["--out", "o"], /no input files/],
      [["--out", "o", "--dtype", "f64", "x.npy"], /--dtype must be f32 or f16/],
      [["--out", "o", "--layer", "last:train=a,eval=b", "x.npy"], /need --manifest/],
      [["--manifest", "m.json", "x.npy"], /not as arguments/],
      [["--manifest", "m.json", "--layer", "last:train=a,eval=b"], /at least one --similarity/],
    ] as [string[], RegExp][]
  ) {
    const e = capture();
    assert.equal(await main(argv, e.io), 2, argv.join(" "));
    assert.match(e.err.join("\n"), re);
  }

  await withTmp(async (dir) => {
    const bad = join(dir, "bad.npy");
    await Deno.writeTextFile(bad, "not numpy");
    const p = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tasks/import.ts", import.meta.url).pathname,
        "--out",
        join(dir, "s"),
        bad,
      ],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const stderr = new TextDecoder().decode(p.stderr);
    assert.equal(p.code, 2, stderr);
    assert.match(
      stderr,
      /^monobench: .*bad\.npy: not a \.npy file \(missing the \\x93NUMPY magic string\)$/m,
    );
    assert.match(stderr, /^hint: save arrays with numpy\.save/m);
    assert.deepEqual(await ls(dir), ["bad.npy"]);
  });
});

Deno.test("import: writeStore interplay — importing into an empty directory works", async () => {
  await withTmp(async (dir) => {
    await Deno.mkdir(join(dir, "empty"));
    await Deno.writeFile(join(dir, "a.npy"), npy(2, 2, [1, 2, 3, 4]));
    await importStore([join(dir, "a.npy")], join(dir, "empty"));
    assert.deepEqual((await ActivationStore.open(join(dir, "empty"))).all(), Float32Array.from([1, 2, 3, 4]));
    // A store written by writeStore directly is "an existing store" for import.
    await writeStore(join(dir, "w"), new Float32Array(4), 2, 2);
    await assert.rejects(importStore([join(dir, "a.npy")], join(dir, "w")), mbErr(/already holds/));
  });
});

// ---- torch.save inputs (fixtures written by real PyTorch: fixtures/torch/make_fixtures.py) ------

const TORCH = new URL("../fixtures/torch/", import.meta.url).pathname;
const PARTS_F32 = join(TORCH, "parts", "f32");
const fixtureNpy = async (name: string) =>
  decodeNpy(await Deno.readFile(join(TORCH, "expected", name)), name).data;

Deno.test("import: torch.save parts (float32 and float16), a folder of parts, as save_activations.py writes them", async () => {
  const x = await fixtureNpy("x.npy"), x16 = await fixtureNpy("x_f16.npy");
  // A folder of parts: sorted by part number (part1, part2, part10), not by name.
  const a = await loadArrays([PARTS_F32]);
  assert.deepEqual([a.n, a.d], [64, 8]);
  assert.deepEqual(a.data, x);
  assert.deepEqual(a.inputs.map((i) => i.n), [20, 24, 20]);
  assert.match(a.inputs[2].describe, /_part10\.pt: 20 × 8 float32 \(torch\.save\)$/);
  // A glob with --parts, in float16: exactly torch's float16 → float32 values.
  const h = await loadArrays([join(TORCH, "parts", "f16", "*_part*.pt")], { parts: true });
  assert.deepEqual(h.data, x16);
  assert.match(h.inputs[0].describe, /float16/);
  // Strided, bfloat16, float64 single files; 3-D, 1-D and dicts are refused.
  const t = await loadArrays([join(TORCH, "tensors", "transposed.pt")]);
  assert.deepEqual([t.n, t.d], [8, 6]);
  assert.match(t.inputs[0].describe, /strided/);
  await assert.rejects(
    loadArrays([join(TORCH, "tensors", "rank3.pt")]),
    mbErr(/2-D tensor \[N, D\]/, /CLS token/),
  );
  await assert.rejects(
    loadArrays([join(TORCH, "tensors", "dict.pt")]),
    mbErr(/expected a single tensor \[N, D\], found a dict \(keys: w, w_t/),
  );
  await assert.rejects(
    loadArrays([join(TORCH, "tensors", "nan.pt")]),
    mbErr(/nan\.pt: tensor of shape \[3, 4\] float32: non-finite value NaN at row 1, column 2/),
  );
  await assert.rejects(
    loadArrays([join(TORCH, "tensors", "legacy.pt")]),
    mbErr(/legacy \(pre-1\.6, non-ZIP\)/),
  );
  await withTmp(async (dir) => {
    await Deno.mkdir(join(dir, "mixed"));
    await Deno.copyFile(
      join(PARTS_F32, "imagenet_val_activations_clip-vit-large-patch14-336_-1_post_projection_part1.pt"),
      join(dir, "mixed", "a_part1.pt"),
    );
    await Deno.writeFile(join(dir, "mixed", "a_part2.npy"), npy(1, 8, new Float32Array(8)));
    await assert.rejects(loadArrays([join(dir, "mixed")]), mbErr(/mixes \.npy and \.pt part files/));
    await Deno.remove(join(dir, "mixed", "a_part2.npy"));
    await Deno.writeFile(join(dir, "mixed", "extra.pt"), new Uint8Array(4));
    await assert.rejects(loadArrays([join(dir, "mixed")]), mbErr(/extra\.pt: no part number/));
    // Symbolic links (a Hugging Face download links files into its cache) are followed.
    await Deno.mkdir(join(dir, "links"));
    for (const p of [1, 2, 10]) {
      const name = `imagenet_val_activations_clip-vit-large-patch14-336_-1_post_projection_part${p}.pt`;
      await Deno.symlink(join(PARTS_F32, name), join(dir, "links", name));
    }
    assert.deepEqual((await loadArrays([join(dir, "links")])).data, await fixtureNpy("x.npy"));
    // Files starting with "all" are skipped, as the reference's ActivationsDataset does.
    await Deno.rename(join(dir, "mixed", "extra.pt"), join(dir, "mixed", "all_parts.pt"));
    assert.equal((await loadArrays([join(dir, "mixed")])).n, 20);
  });
});

Deno.test("import: thousands of small .pt parts stream into a store identical to writeStore's", async () => {
  await withTmp(async (dir) => {
    // 1500 parts cycling through the three fixture parts (20, 24, 20 rows), named part1..part1500.
    const src = [1, 2, 10].map((p) =>
      join(PARTS_F32, `imagenet_val_activations_clip-vit-large-patch14-336_-1_post_projection_part${p}.pt`)
    );
    const x = await fixtureNpy("x.npy");
    const blocks = [x.subarray(0, 160), x.subarray(160, 352), x.subarray(352)];
    const parts = join(dir, "acts");
    await Deno.mkdir(parts);
    const want: number[] = [];
    for (let i = 1; i <= 1500; i++) {
      await Deno.copyFile(src[i % 3], join(parts, `acts_part${i}.pt`));
      want.push(...blocks[i % 3]);
    }
    const out = join(dir, "store");
    const { header } = await importStore([parts], out, { shardRows: 4096 });
    assert.equal(header.n, want.length / 8);
    assert.equal(header.shards.length, Math.ceil(header.n / 4096));
    const s = await ActivationStore.open(out);
    await s.verify();
    assert.deepEqual(s.all(), Float32Array.from(want), "rows in part-number order");
    // Byte-identical to a store written in one go (same shards and content hash).
    const ref = await writeStore(join(dir, "ref"), Float32Array.from(want), header.n, 8, {
      shardRows: 4096,
      meta: header.meta,
    });
    assert.equal(header.sha256, ref.sha256);
    assert.deepEqual(header, ref);
    for (const sh of header.shards) {
      assert.deepEqual(
        await Deno.readFile(join(out, sh.file)),
        await Deno.readFile(join(dir, "ref", sh.file)),
      );
    }
    assert.equal(
      await Deno.readTextFile(join(out, "header.json")),
      await Deno.readTextFile(join(dir, "ref", "header.json")),
    );
  });
});

Deno.test("import: the streaming store writer matches writeStore (f32, f16, shard sizes) and is atomic", async () => {
  await withTmp(async (dir) => {
    const x = randomMatrix(37, 5, 11);
    for (const dtype of ["f32", "f16"] as const) {
      for (const shardRows of [1, 7, 37, 100]) {
        const w = await StoreWriter.create(join(dir, `w-${dtype}-${shardRows}`), 37, 5, {
          dtype,
          shardRows,
          meta: { a: 1 },
        });
        for (const [a, b] of [[0, 3], [3, 4], [4, 20], [20, 37]]) await w.append(x.subarray(a * 5, b * 5));
        const h = await w.finish();
        const r = await writeStore(join(dir, `r-${dtype}-${shardRows}`), x, 37, 5, {
          dtype,
          shardRows,
          meta: { a: 1 },
        });
        assert.deepEqual(h, r, `${dtype} ${shardRows}`);
        await (await ActivationStore.open(join(dir, `w-${dtype}-${shardRows}`))).verify();
      }
    }
    // Failures leave no trace and keep an existing store; too many / too few rows are refused.
    const before = await ls(dir);
    const w = await StoreWriter.create(join(dir, "w-f32-7"), 2, 5);
    await assert.rejects(w.append(new Float32Array(15)), mbErr(/more than the announced 2 rows/));
    await w.abort();
    const w2 = await StoreWriter.create(join(dir, "w-f32-7"), 2, 5);
    await w2.append(new Float32Array(5));
    await assert.rejects(w2.finish(), mbErr(/1 rows written, 2 announced/));
    const w3 = await StoreWriter.create(join(dir, "big16"), 1, 2, { dtype: "f16" });
    await assert.rejects(w3.append(Float32Array.from([1, 1e6])), mbErr(/overflows float16/));
    await w3.abort();
    assert.deepEqual(await ls(dir), before);
    assert.deepEqual((await ActivationStore.open(join(dir, "w-f32-7"))).all(), x);
  });
});

Deno.test("import: manifest from the reference's .pt folders and an embeddings .pt (CLI)", async () => {
  await withTmp(async (dir) => {
    const manifest = join(dir, "clip.json");
    const emb = join(TORCH, "parts", "imagenet_val_embeddings_dinov2-base.pt");
    const { io, err } = capture();
    const code = await main([
      "--manifest",
      manifest,
      "--layer",
      `last:train=${join(TORCH, "parts", "f16")},eval=${PARTS_F32},source=post_projection`,
      "--similarity",
      `dinov2=${emb}`,
    ], io);
    assert.equal(code, 0, err.join("\n"));
    const data = await manifestData(manifest);
    assert.deepEqual(data.layers[0].eval.all(), await fixtureNpy("x.npy"));
    assert.deepEqual(data.layers[0].train.all(), await fixtureNpy("x_f16.npy"));
    assert.deepEqual(data.similarity[0].eval.all(), await fixtureNpy("emb.npy"));
    assert.deepEqual(
      data.layers[0].eval.header.meta.import,
      {
        tool: "monobench import",
        files: [1, 2, 10].map((p, i) => ({
          file: `imagenet_val_activations_clip-vit-large-patch14-336_-1_post_projection_part${p}.pt`,
          rows: [20, 24, 20][i],
          format: "pt",
        })),
      },
    );
    // A legacy file: exit 2, one line and a hint, nothing written.
    const e = capture();
    assert.equal(await main(["--out", join(dir, "s"), join(TORCH, "tensors", "legacy.pt")], e.io), 2);
    assert.deepEqual(e.err.length, 2);
    assert.match(
      e.err[0],
      /^monobench: .*legacy\.pt: legacy \(pre-1\.6, non-ZIP\) torch\.save format is not supported$/,
    );
    assert.match(e.err[1], /^hint: in Python: torch\.save\(torch\.load\(path\), path\)/);
    assert.deepEqual(await ls(dir), ["clip-stores", "clip.json"]);
  });
});

Deno.test("import: an evaluation-only manifest with SigLIP layer names and a model", async () => {
  await withTmp(async (dir) => {
    const ev = randomMatrix(9, 4, 15), emb = randomMatrix(9, 3, 16);
    await Deno.writeFile(join(dir, "val.npy"), npy(9, 4, ev));
    await Deno.writeFile(join(dir, "emb.npy"), npy(9, 3, emb));
    const manifest = join(dir, "m.json");
    const { io } = capture();
    const code = await main([
      "--manifest",
      manifest,
      "--layer",
      `16:eval=${join(dir, "val.npy")}`,
      "--similarity",
      `clip-vit-b32=${join(dir, "emb.npy")}`,
      "--model",
      "siglip-so400m-14-384",
    ], io);
    assert.equal(code, 0);
    const m = JSON.parse(await Deno.readTextFile(manifest));
    assert.equal(m.model, "siglip-so400m-14-384");
    assert.equal(m.layers[0].layer, "16");
    assert.equal(m.layers[0].train, undefined);
    const data = await manifestEvalData(manifest);
    assert.equal(data.model, "siglip-so400m-14-384");
    assert.deepEqual(data.layers[0].eval.all(), ev);
    // It cannot be trained on.
    await assert.rejects(manifestData(manifest), MonobenchError);
  });
});
