import { deepStrictEqual, equal, notDeepStrictEqual, ok, rejects, throws } from "node:assert/strict";
import { MonobenchError } from "../src/util/errors.ts";
import { PAPER_LAYERS } from "../src/types.ts";
import { EMBEDDED_LAYERS, loadMnist, mnistSplit, prepareEmbedded } from "../src/data/embedded.ts";

Deno.test("embedded: MNIST split is deterministic, balanced and disjoint", async () => {
  const { counts } = await loadMnist();
  equal(counts.length, 10);
  ok(counts.every((c) => c > 800));
  const a = mnistSplit(counts, 103, 57, 0);
  deepStrictEqual(a, mnistSplit(counts, 103, 57, 0));
  notDeepStrictEqual(a, mnistSplit(counts, 103, 57, 1));
  equal(a.train.length, 103);
  equal(a.eval.length, 57);
  const perClass = (rows: [number, number][]) => {
    const n = new Array(10).fill(0);
    for (const [c] of rows) n[c]++;
    return n;
  };
  deepStrictEqual(perClass(a.train), [11, 11, 11, 10, 10, 10, 10, 10, 10, 10]);
  deepStrictEqual(perClass(a.eval), [6, 6, 6, 6, 6, 6, 6, 5, 5, 5]);
  const key = (r: [number, number]) => `${r[0]}:${r[1]}`;
  const seen = new Set(a.train.map(key));
  equal(seen.size, 103);
  ok(a.eval.every((r) => !seen.has(key(r))));
  // Rows are shuffled, not grouped by class.
  notDeepStrictEqual(a.train.map(([c]) => c), [...a.train.map(([c]) => c)].sort());
  // The eval split does not depend on nTrain (same seed).
  deepStrictEqual(mnistSplit(counts, 500, 57, 0).eval, a.eval);
  throws(() => mnistSplit(counts, 10000, 2000, 0), (e: unknown) => {
    ok(
      e instanceof MonobenchError && /exceed/.test(e.message) && /at most 6630/.test(e.hint ?? ""),
      String(e),
    );
    return true;
  });
});

Deno.test("embedded: small prepareEmbedded run — shapes, labels, similarity, caching", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "monobench-embedded-" });
  try {
    const stages1 = new Set<string>();
    const d = await prepareEmbedded({ cacheDir, nTrain: 40, nEval: 20, onProgress: (s) => stages1.add(s) });
    ok(
      stages1.has("mobilenet_v2:train") && stages1.has("mobilenet_v2:eval") && stages1.has("inception_v3"),
      [...stages1].join(","),
    );
    deepStrictEqual(d.layers.map((l) => l.layer), [...PAPER_LAYERS]);
    deepStrictEqual(d.layers.map((l) => l.d), [64, 96, 160, 160, 320]);
    d.layers.forEach((l, i) => ok(l.sourceLayer.includes(EMBEDDED_LAYERS[i].keras), l.sourceLayer));
    for (const l of d.layers) {
      equal(l.train.n, 40);
      equal(l.eval.n, 20);
      equal(l.train.d, l.d);
      equal(l.eval.d, l.d);
      ok(l.train.all().every(Number.isFinite));
      await l.eval.verify();
    }
    // Every layer, "last" included, is a linear block output (projection / residual sum): some
    // pooled values are negative, unlike a ReLU layer's.
    for (const l of d.layers) ok(l.train.all().some((v) => v < 0), `layer ${l.layer} has negative values`);
    deepStrictEqual(d.layers.map((l) => l.sourceLayer.split(" ")[0]), [
      "mobilenet_v2/block_7_add",
      "mobilenet_v2/block_11_add",
      "mobilenet_v2/block_14_add",
      "mobilenet_v2/block_15_add",
      "mobilenet_v2/block_16_project_BN",
    ]);
    equal(d.labels.train.length, 40);
    equal(d.labels.eval.length, 20);
    const hist = (l: Uint8Array) => Array.from({ length: 10 }, (_, c) => l.filter((x) => x === c).length);
    deepStrictEqual(hist(d.labels.train), new Array(10).fill(4));
    deepStrictEqual(hist(d.labels.eval), new Array(10).fill(2));
    deepStrictEqual(d.similarity.map((s) => [s.name, s.eval.n, s.eval.d]), [["labels", 20, 10], [
      "inceptionv3",
      20,
      2048,
    ]]);
    const onehot = d.similarity[0].eval.all();
    for (let i = 0; i < 20; i++) {
      deepStrictEqual(
        Array.from(onehot.subarray(10 * i, 10 * i + 10)),
        Array.from({ length: 10 }, (_, c) => (c === d.labels.eval[i] ? 1 : 0)),
      );
    }
    ok(d.similarity[1].eval.all().every((v) => Number.isFinite(v) && v >= 0));
    ok(d.description.length > 20 && !d.description.includes("\n"));
    ok(d.description.includes("40 train / 20 eval"));

    // Second call: everything from the cache (no model runs), same content.
    const stages2 = new Set<string>();
    const e = await prepareEmbedded({ cacheDir, nTrain: 40, nEval: 20, onProgress: (s) => stages2.add(s) });
    deepStrictEqual([...stages2], ["mnist"]);
    deepStrictEqual(
      e.layers.map((l) => [l.train.sha256, l.eval.sha256]),
      d.layers.map((l) => [l.train.sha256, l.eval.sha256]),
    );
    deepStrictEqual(e.similarity.map((s) => s.eval.sha256), d.similarity.map((s) => s.eval.sha256));
    deepStrictEqual(e.labels, d.labels);
    // Another nTrain: the eval stores (and InceptionV3) are reused, only the train split is computed;
    // its images are a subset of the 40-image split, so every feature row reappears.
    const stages3 = new Set<string>();
    const f = await prepareEmbedded({ cacheDir, nTrain: 30, nEval: 20, onProgress: (s) => stages3.add(s) });
    ok(
      stages3.has("mobilenet_v2:train") && !stages3.has("mobilenet_v2:eval") && !stages3.has("inception_v3"),
    );
    deepStrictEqual(f.layers.map((l) => l.eval.dir), d.layers.map((l) => l.eval.dir));
    equal(f.layers[1].train.n, 30);
    const small = f.layers[1].train.all(), big = d.layers[1].train.all(), D = 96;
    for (let i = 0; i < 30; i++) {
      let found = false;
      for (let k = 0; k < 40 && !found; k++) {
        let maxd = 0;
        for (let j = 0; j < D; j++) maxd = Math.max(maxd, Math.abs(small[i * D + j] - big[k * D + j]));
        found = maxd <= 1e-4 && f.labels.train[i] === d.labels.train[k];
      }
      ok(found, `train row ${i} of the 30-image split not found in the 40-image split`);
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("embedded: bad options are MonobenchErrors", async () => {
  await rejects(prepareEmbedded({ cacheDir: "" }), MonobenchError);
  await rejects(prepareEmbedded({ cacheDir: "/tmp/x", nEval: 5 }), /nEval must be an integer ≥ 10/);
  await rejects(prepareEmbedded({ cacheDir: "/tmp/x", nTrain: 9000, nEval: 2000 }), /exceed/);
  await rejects(prepareEmbedded({ cacheDir: "/tmp/x", mobilenetSize: 16 }), /mobilenetSize/);
});
