/**
 * Experiments as data (experiments/*.json, src/grid/experiments.ts): the built-in files, their
 * grids and presets, bad declarations, the config's experiment field and hash, free layer names
 * in manifests, the embedded default under SigLIP's layer names, and the paper diff picking the
 * rows of the experiment's tables and the data's model.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeStore } from "../src/data/store.ts";
import { paperCases, selectCases } from "../src/grid/cases.ts";
import {
  checkExperimentTables,
  defaultExperiments,
  type Experiment,
  experimentDiffOptions,
  listExperimentNames,
  loadExperiment,
  parseExperiment,
  resolveExperiments,
  runModel,
} from "../src/grid/experiments.ts";
import { diffAgainstPaper } from "../src/report/diff.ts";
import { loadFixtures } from "../src/report/fixtures.ts";
import { syntheticCase, syntheticLayer, syntheticMs } from "../src/report/synthetic.ts";
import {
  configHash,
  describeDifferences,
  diffConfigs,
  hashedPart,
  resolveConfig,
} from "../src/run/config.ts";
import {
  dataForExperiments,
  embeddedForExperiments,
  manifestData,
  manifestEvalData,
  type RunData,
  storeRoles,
} from "../src/run/data.ts";
import { compareLayers } from "../src/types.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { REPO_ROOT } from "../src/util/paths.ts";

const fx = await loadFixtures();
const SIGLIP = loadExperiment("siglip-so400m");
const ENCODERS = loadExperiment("encoders-table1b");

const mbErr = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
  assert.match(e.message, re);
  assert.doesNotMatch(e.message, /\n/, "one line");
  return true;
};

async function withTmp(f: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mb-exp-" });
  try {
    await f(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("experiments: the built-in files validate and each table holds rows of every model they name", () => {
  assert.deepEqual(listExperimentNames(), [
    "clip-vitl-main",
    "encoders-table1b",
    "k-ablation",
    "siglip-so400m",
  ]);
  for (const name of listExperimentNames()) {
    const e = loadExperiment(name);
    assert.equal(e.name, name);
    for (const m of e.models) checkExperimentTables([e], fx, m);
  }
  assert.deepEqual(defaultExperiments(), [loadExperiment("clip-vitl-main"), loadExperiment("k-ablation")]);
  // The default grid is the reference script's (LAYERS × SAE × EF) plus the K ablation, in this order.
  const want: string[] = [];
  for (const l of ["11", "17", "22", "23", "last"]) {
    for (const s of ["batchtopk", "matryoshka"]) {
      for (const x of [1, 2, 4, 8, 16, 64]) want.push(`${s}-${l}-x${x}-k20`);
    }
  }
  want.push("matryoshka-last-x1-k1", "matryoshka-last-x1-k10", "matryoshka-last-x1-k50");
  assert.deepEqual(paperCases().map((c) => c.id), want);
  // Presets size each experiment.
  const sizes = (e: Experiment) =>
    (["smoke", "default", "paper"] as const).map((p) => selectCases(p, { experiments: [e] }).cases.length);
  assert.deepEqual(sizes(SIGLIP), [4, 40, 48]);
  assert.deepEqual(sizes(ENCODERS), [1, 2, 2]);
  assert.deepEqual(sizes(loadExperiment("k-ablation")), [1, 4, 4]);
  const sig = selectCases("paper", { experiments: [SIGLIP] }).cases;
  assert.deepEqual([...new Set(sig.map((c) => c.layer))], ["11", "16", "21", "last"]);
  assert.ok(sig.every((c) => c.groups.length === 1 && c.groups[0] === "siglip"));
  // A user SAE joins a grid at its K (the K ablation adds none of other K).
  const withTopk = selectCases("smoke", {
    experiments: [SIGLIP, ENCODERS],
    extraSaes: ["topk"],
    knownSaes: ["batchtopk", "matryoshka", "topk"],
  }).cases;
  assert.deepEqual(withTopk.filter((c) => c.sae === "topk").map((c) => c.id), [
    "topk-last-x1-k20",
    "topk-last-x2-k20",
  ]);
  assert.throws(
    () => selectCases("smoke", { experiments: [SIGLIP], knownSaes: ["batchtopk"] }),
    mbErr(/experiment siglip-so400m lists unknown SAE type "matryoshka"; known SAE types: batchtopk/),
  );
});

Deno.test("experiment files: unknown keys, wrong types and inconsistent declarations are refused", async () => {
  await withTmp(async (tmp) => {
    const base = JSON.parse(await Deno.readTextFile(join(REPO_ROOT, "experiments", "siglip-so400m.json")));
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ layerz: ["11"] }, /\/layerz: unknown property "layerz"/],
      [{ layers: "11" }, /\/layers: expected array, got string/],
      [{ expansions: [0] }, /\/expansions\/0: 0 must be > 0/],
      [{ k: [2.5] }, /\/k\/0: expected integer/],
      [{ layers: ["11", "11"] }, /"layers" lists "11" twice/],
      [{ layers: ["a-b"] }, /\/layers\/0: string "a-b" does not match/],
      [{ similarity: ["dino"] }, /\/similarity\/0: expected one of "dinov2", "clip-vit-b32"/],
      [{ tables: "Table A4" }, /\/tables: expected array/],
      [
        { presets: { smoke: "layers=17" } },
        /presets\.smoke "layers=17": grid filter: unknown layers value "17"; valid values: 11, 16, 21, last/,
      ],
      [{ presets: { smoke: "from=paper" } }, /presets\.smoke "from=paper": from= is not allowed/],
      [{ presets: { huge: "eps=1" } }, /\/presets\/huge: unknown property "huge"/],
      [{ embedded: { "99": "11" } }, /"embedded" maps layer "99", which is not one of its layers/],
      [{ embedded: { "16": "18" } }, /\/embedded\/16: expected one of "11", "17", "22", "23", "last"/],
      [{ name: "Bad Name" }, /\/name: string "Bad Name" does not match/],
    ];
    for (const [i, [patch, re]] of bad.entries()) {
      const path = join(tmp, `bad${i}.json`);
      await Deno.writeTextFile(path, JSON.stringify({ ...base, ...patch }));
      assert.throws(() => loadExperiment(path), mbErr(re), JSON.stringify(patch));
    }
    const { name: _, ...noName } = base;
    await Deno.writeTextFile(join(tmp, "noname.json"), JSON.stringify(noName));
    assert.throws(() => loadExperiment(join(tmp, "noname.json")), mbErr(/missing required property "name"/));
    await Deno.writeTextFile(join(tmp, "broken.json"), "{ nope");
    assert.throws(() => loadExperiment(join(tmp, "broken.json")), mbErr(/is not valid JSON/));
    assert.throws(() => loadExperiment(join(tmp, "missing.json")), mbErr(/cannot read experiment file/));
    assert.throws(
      () => parseExperiment(base, "x", "other"),
      mbErr(/"name" is "siglip-so400m" but the file is other\.json/),
    );
    // A valid user experiment in its own file.
    const { group: _g, ...ungrouped } = base;
    const mine = { ...ungrouped, name: "my-exp", layers: ["block_3", "last"], embedded: { block_3: "11" } };
    await Deno.writeTextFile(
      join(tmp, "mine.json"),
      JSON.stringify({ ...mine, presets: { smoke: "layers=last" } }),
    );
    const e = loadExperiment(join(tmp, "mine.json"));
    assert.deepEqual(e.layers, ["block_3", "last"]);
    assert.equal(e.group, "my-exp", "the group defaults to the name");
  });
});

Deno.test("resolveExperiments: names, paths and lists; unknown, repeated and model-disjoint ones refused", () => {
  assert.deepEqual(resolveExperiments("clip-vitl-main, k-ablation", REPO_ROOT, "--experiment"), [
    ...defaultExperiments(),
  ]);
  assert.deepEqual(resolveExperiments(["experiments/siglip-so400m.json"], REPO_ROOT, "x"), [SIGLIP]);
  assert.deepEqual(resolveExperiments([SIGLIP], "/", "x"), [SIGLIP], "declarations, as run.json stores them");
  assert.throws(
    () => resolveExperiments("nope", REPO_ROOT, "--experiment"),
    mbErr(
      /unknown experiment "nope"; experiments\/ has: clip-vitl-main, encoders-table1b, k-ablation, siglip-so400m/,
    ),
  );
  assert.throws(() => resolveExperiments("k-ablation,k-ablation", REPO_ROOT, "e"), mbErr(/given twice/));
  assert.throws(() => resolveExperiments([], REPO_ROOT, "--experiment"), mbErr(/must name at least one/));
  assert.throws(() => resolveExperiments(5, REPO_ROOT, "--experiment"), mbErr(/must name at least one/));
  assert.throws(
    () => resolveExperiments("siglip-so400m,clip-vitl-main", REPO_ROOT, "e"),
    mbErr(/compare different models/),
  );
  // Sharing a model is enough: the encoder comparison runs with SigLIP's experiment on SigLIP data.
  const both = resolveExperiments("siglip-so400m,encoders-table1b", REPO_ROOT, "e");
  assert.equal(runModel(both, null), "siglip-so400m-14-384");
  assert.equal(runModel([ENCODERS], null), "clip-vit-l14-336");
  assert.equal(runModel([ENCODERS], "aimv2-l14-224"), "aimv2-l14-224");
  assert.throws(
    () => runModel(defaultExperiments(), "siglip-so400m-14-384", "the manifest m.json"),
    mbErr(
      /the manifest m\.json holds activations of siglip-so400m-14-384, but experiment clip-vitl-main compares with clip-vit-l14-336/,
    ),
  );
});

Deno.test("config: the default experiments keep the stored baseline's hash; another experiment is hashed and named", async () => {
  const baseline = JSON.parse(await Deno.readTextFile(join(REPO_ROOT, "results", "baseline", "report.json")));
  const cli = {
    preset: "smoke",
    grid: "from=paper layers=23 eps=1,2 k=20",
    backend: "cpu",
    "data.nTrain": 200,
    "data.nEval": 100,
    "train.steps": 40,
    "train.batchSize": 64,
    seeds: [0, 1, 2],
  };
  const def = await resolveConfig({ cli });
  assert.equal(def.hash, baseline.run.configHash, "made before experiments were files");
  assert.deepEqual(def.config.experiment.map((e) => e.name), ["clip-vitl-main", "k-ablation"]);
  assert.equal(def.origins.experiment, "default");
  assert.ok(!("experiment" in hashedPart(def.config as never)));
  const sig = await resolveConfig({ cli: { ...cli, experiment: ["siglip-so400m"] } });
  assert.notEqual(sig.hash, def.hash);
  assert.deepEqual(hashedPart(sig.config as never).experiment, [JSON.parse(JSON.stringify(SIGLIP))]);
  const diffs = diffConfigs(def.config as never, sig.config as never);
  assert.equal(describeDifferences(diffs), "--experiment clip-vitl-main,k-ablation there, siglip-so400m now");
  // An older run.json (no experiment field) reads as the default experiments.
  const { experiment: _, ...old } = def.config;
  assert.equal(configHash(old as never), def.hash);
  await withTmp(async (tmp) => {
    const file = join(tmp, "c.json");
    await Deno.writeTextFile(file, JSON.stringify({ experiment: "k-ablation" }));
    const f = await resolveConfig({ configFile: file });
    assert.deepEqual(f.config.experiment.map((e) => e.name), ["k-ablation"]);
    assert.equal(f.origins.experiment, "file");
    // run.json stores the declarations; fed back as a config file they resolve to the same hash.
    await Deno.writeTextFile(file, JSON.stringify({ experiment: sig.config.experiment, preset: "smoke" }));
    const again = await resolveConfig({ configFile: file, cli: { ...cli } });
    assert.equal(again.hash, sig.hash);
    await Deno.writeTextFile(file, JSON.stringify({ experiment: [{ name: "x" }] }));
    await assert.rejects(resolveConfig({ configFile: file }), mbErr(/missing required property "title"/));
  });
});

Deno.test("layer names sort by depth: numbered ones by number, named ones, then last", () => {
  assert.deepEqual(["last", "21", "block_3", "11", "16", "2", "a.b"].sort(compareLayers), [
    "2",
    "11",
    "16",
    "21",
    "a.b",
    "block_3",
    "last",
  ]);
});

Deno.test("grid over an experiment: its layer names, and unknown ones refused with the valid list", () => {
  const { cases } = selectCases("default", { experiments: [SIGLIP], grid: "layers=16 sae=matryoshka" });
  assert.deepEqual(cases.map((c) => c.id), [1, 2, 4, 8, 16].map((x) => `matryoshka-16-x${x}-k20`));
  assert.throws(
    () => selectCases("default", { experiments: [SIGLIP], grid: "layers=17" }),
    mbErr(/unknown layers value "17"; valid values: 11, 16, 21, last, all/),
  );
  assert.equal(selectCases("default", { experiments: [SIGLIP], grid: "from=paper eps=64" }).cases.length, 8);
});

async function store(dir: string, name: string, n: number, d: number, seed: number): Promise<string> {
  const x = new Float32Array(n * d);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(seed * 1000 + i * 0.37);
  const path = join(dir, name);
  await writeStore(path, x, n, d);
  return path;
}

Deno.test("data: free layer names and a model in manifests; eval-only manifests; bad names refused", async () => {
  await withTmp(async (tmp) => {
    const a = await store(tmp, "a", 12, 4, 1),
      b = await store(tmp, "b", 12, 6, 2),
      s = await store(tmp, "s", 12, 3, 3);
    const write = async (m: unknown) => {
      const p = join(tmp, "m.json");
      await Deno.writeTextFile(p, JSON.stringify(m));
      return p;
    };
    const m = {
      model: "siglip-so400m-14-384",
      layers: [{ layer: "16", train: a, eval: a }, { layer: "block_7.add", train: b, eval: b }],
      similarity: [{ name: "clip-vit-b32", eval: s }],
    };
    const data = await manifestData(await write(m));
    assert.deepEqual(data.layers.map((l) => [l.layer, l.d]), [["16", 4], ["block_7.add", 6]]);
    assert.equal(data.model, "siglip-so400m-14-384");
    const evalOnly = { ...m, layers: [{ layer: "16", eval: a }] };
    await assert.rejects(
      manifestData(await write(evalOnly)),
      mbErr(/layers\[0\] \(layer 16\) has no "train" split/),
    );
    const ev = await manifestEvalData(await write(evalOnly));
    assert.deepEqual(storeRoles(ev).map((r) => r.role), ["eval:16", "similarity:clip-vit-b32"]);
    for (
      const [patch, re] of [
        [{ layers: [{ layer: "a-b", train: a, eval: a }] }, /layer name "a-b" must be letters, digits/],
        [{ layers: [{ layer: 11, train: a, eval: a }] }, /layer name 11 must be letters/],
        [{ model: "" }, /"model" must be a model name/],
        [{ models: ["x"] }, /unknown key "models"/],
      ] as const
    ) {
      await assert.rejects(manifestData(await write({ ...m, ...patch })), mbErr(re));
    }
  });
});

Deno.test("data: the embedded default under SigLIP's layer names; missing layers and other models refused early", async () => {
  await withTmp(async (tmp) => {
    const layers = [];
    for (const [i, l] of ["11", "17", "22", "23", "last"].entries()) {
      const st = await (await import("../src/data/store.ts")).ActivationStore.open(
        await store(tmp, `e${l}`, 10, 2 + i, i),
      );
      layers.push({ layer: l, sourceLayer: `src${l}`, d: st.d, train: st, eval: st });
    }
    const sim = await (await import("../src/data/store.ts")).ActivationStore.open(
      await store(tmp, "sim", 10, 3, 9),
    );
    const embedded: RunData = {
      layers,
      similarity: [{ name: "labels", eval: sim }],
      description: "emb",
      model: null,
    };
    assert.equal(embeddedForExperiments(embedded, defaultExperiments()), embedded, "identity: unchanged");
    const sig = embeddedForExperiments(embedded, [SIGLIP]);
    assert.deepEqual(sig.layers.map((l) => [l.layer, l.sourceLayer]), [
      ["11", "src11"],
      ["16", "src17"],
      ["21", "src22"],
      ["last", "srclast"],
    ]);
    assert.equal(sig.layers[1].train.sha256, layers[1].train.sha256);
    assert.match(sig.description, /^emb; layers 16 ← 17, 21 ← 22$/);
    const odd = { ...SIGLIP, name: "odd", layers: ["block9"], embedded: {} };
    assert.throws(
      () => embeddedForExperiments(embedded, [odd]),
      mbErr(/needs layer block9, which the embedded default does not have/),
    );

    const cases =
      selectCases("smoke", { experiments: [SIGLIP], grid: "from=paper eps=1 sae=batchtopk" }).cases;
    const run = { experiments: [SIGLIP], embedded: false, dataWhat: "the data manifest m.json" };
    const manifest: RunData = {
      ...sig,
      layers: sig.layers.filter((l) => l.layer !== "21"),
      model: "siglip-so400m-14-384",
    };
    assert.throws(
      () => dataForExperiments(manifest, run, cases, fx),
      mbErr(/experiment siglip-so400m needs layer 21, but the data manifest m\.json has only 11, 16, last/),
    );
    try {
      dataForExperiments(manifest, run, cases, fx);
    } catch (e) {
      assert.match((e as MonobenchError).hint ?? "", /--grid "layers=11,16,last"/);
    }
    assert.throws(
      () => dataForExperiments({ ...sig, model: "clip-vit-l14-336" }, run, cases, fx),
      mbErr(
        /holds activations of clip-vit-l14-336, but experiment siglip-so400m compares with siglip-so400m-14-384/,
      ),
    );
    assert.equal(dataForExperiments({ ...embedded }, { ...run, embedded: true }, cases, fx).layers.length, 4);
  });
});

Deno.test("diff: the experiment's tables and the data's model pick the paper rows", () => {
  // SigLIP, BatchTopK layer 11 ×1: Table A4 mean .50 ± .03, Table A7 best/worst .61/.41; No SAE 16: .4809, .53/.47.
  const c = syntheticCase({
    layer: "11",
    sae: "batchtopk",
    expansion: 1,
    ms: [syntheticMs("clip-vit-b32", 0.5, 0.61, 0.41)],
    r2: 50,
  });
  const raw = syntheticLayer("16", [syntheticMs("clip-vit-b32", 0.4809, 0.53, 0.47)]);
  const d = diffAgainstPaper([c], [raw], fx, experimentDiffOptions([SIGLIP], "siglip-so400m-14-384"));
  assert.equal(d.model, "siglip-so400m-14-384");
  assert.deepEqual(d.tables, ["Table A4", "Table A7"]);
  assert.deepEqual(d.encoderMap, { "clip-vit-b32": "clip-vit-b32" });
  const got = d.rows.map((r) => [r.caseId, r.table, r.metric, r.paper, r.status]);
  assert.deepEqual(got, [
    ["batchtopk-11-x1-k20", "Table A4", "ms_mean", 0.5, "within"],
    ["batchtopk-11-x1-k20", "Table A7", "ms_max", 0.61, "within"],
    ["batchtopk-11-x1-k20", "Table A7", "ms_min", 0.41, "within"],
    ["raw-16", "Table A4", "ms_mean", 0.4809, "within"],
    ["raw-16", "Table A7", "ms_max", 0.53, "within"],
    ["raw-16", "Table A7", "ms_min", 0.47, "within"],
  ]);
  assert.match(d.note, /siglip-so400m-14-384/);
  // On the embedded default our primary source stands for the experiment's encoder, CLIP ViT-B/32.
  const emb = diffAgainstPaper(
    [{ ...c, ms: [syntheticMs("labels", 0.5, 0.9), syntheticMs("inceptionv3", 0.5, 0.61)] }],
    [],
    fx,
    experimentDiffOptions([SIGLIP], "siglip-so400m-14-384"),
  );
  assert.deepEqual(emb.encoderMap, { "clip-vit-b32": "inceptionv3" });
  // Table 1b: one row per encoder (AIMv2 ×1 .59, ×4 .85; CLIP ×1 .82).
  const m1 = syntheticCase({
    layer: "last",
    sae: "matryoshka",
    expansion: 1,
    ms: [syntheticMs("dinov2", 0.2, 0.59)],
  });
  const m4 = syntheticCase({
    layer: "last",
    sae: "matryoshka",
    expansion: 4,
    ms: [syntheticMs("dinov2", 0.2, 0.85)],
  });
  const aim = diffAgainstPaper([m1, m4], [], fx, experimentDiffOptions([ENCODERS], "aimv2-l14-224"));
  assert.deepEqual(aim.rows.map((r) => [r.caseId, r.table, r.paper, r.delta]), [
    ["matryoshka-last-x1-k20", "Table 1b", 0.59, 0],
    ["matryoshka-last-x4-k20", "Table 1b", 0.85, 0],
  ]);
  const clip = diffAgainstPaper([m1], [], fx, experimentDiffOptions([ENCODERS], "clip-vit-l14-336"));
  assert.deepEqual(clip.rows.map((r) => [r.table, r.paper]), [["Table 1b", 0.82]]);
  // Without an experiment the CLIP number is attributed to Table 1a, as before.
  assert.equal(diffAgainstPaper([m1], [], fx).rows.find((r) => r.metric === "ms_max")!.table, "Table 1a");
});
