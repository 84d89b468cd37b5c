import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import {
  addSaes,
  applyGridFilter,
  caseId,
  estimatePresetSeconds,
  getPreset,
  learningRate,
  PAPER_HYPER,
  paperCases,
  parseGridFilter,
  scaledHyper,
  selectCases,
} from "../src/grid/cases.ts";
import { MonobenchError } from "../src/util/errors.ts";

Deno.test("paper grid: 60 main cases + K ablation deduplicated by id", () => {
  const cases = paperCases();
  equal(cases.length, 63);
  equal(new Set(cases.map((c) => c.id)).size, 63);
  const main = cases.filter((c) => c.groups.includes("main"));
  const abl = cases.filter((c) => c.groups.includes("k-ablation"));
  equal(main.length, 60);
  equal(abl.length, 4);
  deepStrictEqual(abl.map((c) => c.k).sort((a, b) => a - b), [1, 10, 20, 50]);
  for (const c of abl) {
    equal(c.sae, "matryoshka");
    equal(c.layer, "last");
    equal(c.expansion, 1); // ε=1, not the caption's 16
  }
  const shared = cases.find((c) => c.id === "matryoshka-last-x1-k20")!;
  deepStrictEqual(shared.groups, ["main", "k-ablation"]);
  ok(cases.some((c) => c.id === "batchtopk-11-x64-k20"));
  equal(caseId("matryoshka", "last", 4, 20), "matryoshka-last-x4-k20");
  for (const c of main) equal(c.k, 20);
});

Deno.test("presets: sizes, hyperparameters and scaling rule", () => {
  const smoke = getPreset("smoke");
  deepStrictEqual(smoke.cases.map((c) => c.id), [
    "batchtopk-last-x1-k20",
    "batchtopk-last-x2-k20",
    "matryoshka-last-x1-k20",
    "matryoshka-last-x2-k20",
  ]);
  const def = getPreset("default");
  equal(def.cases.length, 53);
  equal(def.cases.filter((c) => c.groups.includes("k-ablation")).length, 4);
  equal(def.cases.filter((c) => c.layer === "last" && c.k === 20).length, 10);
  ok(def.cases.every((c) => c.expansion <= 16), "ε = 64 only in the paper preset");
  equal(def.hyper.lrRule, "paper");
  // Seeds per case: enough for a t-interval on the default preset, one elsewhere.
  equal(def.seeds, 3);
  equal(smoke.seeds, 1);
  equal(getPreset("paper").seeds, 1);
  equal(def.hyper.thresholdBeta, 0.9, "EMA window 1 % of 300 steps, at least 10 steps");
  const paper = getPreset("paper");
  equal(paper.cases.length, 63);
  deepStrictEqual(paper.hyper, { ...PAPER_HYPER });
  equal(paper.hyper.steps, 100_000);
  equal(paper.hyper.batchSize, 4096);
  equal(paper.hyper.deadAfterTokens, 10_000_000);
  equal(paper.hyper.auxkAlpha, 0.03);
  equal(paper.hyper.lrRule, "code");
  // scaling: 1 % warmup, 2.44 % of tokens (≥ 4 batches) for dead latents, 20 % checkpoints
  const h = scaledHyper(10_000, 1024);
  equal(h.warmupSteps, 100);
  equal(h.thresholdStartStep, 100);
  equal(h.thresholdBeta, 0.99);
  equal(scaledHyper(100_000, 4096).thresholdBeta, 0.999);
  equal(h.deadAfterTokens, Math.round(10_000 * 1024 * 1e7 / (1e5 * 4096)));
  equal(h.checkpointEvery, 2000);
  equal(smoke.hyper.warmupSteps, 1);
  equal(smoke.hyper.deadAfterTokens, 4 * smoke.hyper.batchSize);
  ok(smoke.hyper.steps < def.hyper.steps);
  // cost model: smoke far below default, default within ~15 min at the assumed 10 GFLOP/s
  // Embedded-default layer widths; ~25 GFLOP/s effective (OpenBLAS encode, scalar TS for the rest).
  const dims = { "11": 64, "17": 96, "22": 160, "23": 160, last: 320 } as const;
  const sSmoke = estimatePresetSeconds(smoke, { dims, gflops: 25 });
  const sDef = estimatePresetSeconds(def, { dims, gflops: 25 });
  ok(sSmoke < 30, `smoke estimate ${sSmoke}`);
  ok(sDef < 15 * 60 && sDef > sSmoke * 10, `default estimate ${sDef}`);
  throws(
    () => getPreset("huge"),
    (e) => e instanceof MonobenchError && /smoke, default, paper/.test(e.message),
  );
  throws(() => scaledHyper(0, 10), MonobenchError);
});

Deno.test("learning-rate rules differ by 5x (paper.md table)", () => {
  ok(Math.abs(learningRate("code", 1024) - 8e-4) < 1e-9);
  ok(Math.abs(learningRate("paper", 1024) - 4e-3) < 1e-9);
  ok(Math.abs(learningRate("code", 65536) - 1e-4) < 1e-9);
});

Deno.test("user SAE types are added by name and validated", () => {
  const p = getPreset("smoke", {
    extraSaes: ["topk"],
    knownSaes: ["batchtopk", "matryoshka", "topk", "relu"],
  });
  equal(p.cases.length, 6);
  ok(p.cases.some((c) => c.id === "topk-last-x2-k20"));
  throws(
    () => getPreset("smoke", { extraSaes: ["mine"], knownSaes: ["batchtopk", "topk"] }),
    (e) => e instanceof MonobenchError && /unknown SAE type "mine".*batchtopk, topk/.test(e.message),
  );
  throws(() => addSaes(paperCases(), ["topk"]), MonobenchError);
  // the K ablation cases do not spawn user-SAE cases of other K
  const all = addSaes(paperCases(), ["relu"], ["relu"], ["main"]);
  equal(all.filter((c) => c.sae === "relu").length, 30);
});

Deno.test("grid filter: parsing, singular keys, all, errors", () => {
  const f = parseGridFilter("layers=last,22 eps=1,4 sae=matryoshka k=20");
  deepStrictEqual(f, { layers: ["last", "22"], expansions: [1, 4], saes: ["matryoshka"], ks: [20] });
  deepStrictEqual(parseGridFilter("layer=last ep=x16 sae=all"), { layers: ["last"], expansions: [16] });
  deepStrictEqual(parseGridFilter("all"), {});
  deepStrictEqual(parseGridFilter("  "), {});
  const sel = applyGridFilter(paperCases(), f);
  deepStrictEqual(sel.map((c) => c.id), [
    "matryoshka-22-x1-k20",
    "matryoshka-22-x4-k20",
    "matryoshka-last-x1-k20",
    "matryoshka-last-x4-k20",
  ]);
  equal(applyGridFilter(paperCases(), parseGridFilter("group=k-ablation")).length, 4);
  throws(
    () => parseGridFilter("depth=3"),
    (e) => e instanceof MonobenchError && /unknown key "depth".*layers/.test(e.message),
  );
  throws(
    () => parseGridFilter("layers=12"),
    (e) => e instanceof MonobenchError && /"12".*valid values: 11, 17, 22, 23, last/.test(e.message),
  );
  throws(
    () => parseGridFilter("eps=3"),
    (e) => e instanceof MonobenchError && /1, 2, 4, 8, 16, 64/.test(e.message),
  );
  throws(
    () => parseGridFilter("sae=foo"),
    (e) => e instanceof MonobenchError && /batchtopk, matryoshka/.test(e.message),
  );
  throws(() => parseGridFilter("layers"), (e) => e instanceof MonobenchError && /key=value/.test(e.message));
  throws(() => parseGridFilter("k=20 ks=1"), (e) => e instanceof MonobenchError && /twice/.test(e.message));
  // valid values, but no case combines them
  throws(
    () => applyGridFilter(paperCases(), parseGridFilter("k=1 eps=4")),
    (e) => e instanceof MonobenchError && /selects no case/.test(e.message),
  );
});

Deno.test("selectCases: filters the preset, from= picks another preset's cases", () => {
  const { preset, cases } = selectCases("default", { grid: "layers=last sae=batchtopk" });
  equal(preset.name, "default");
  deepStrictEqual(cases.map((c) => c.expansion), [1, 2, 4, 8, 16]);
  // ε=64 is not in the default preset: listed valid values are the preset's
  throws(
    () => selectCases("default", { grid: "eps=64" }),
    (e) => e instanceof MonobenchError && /valid values: 1, 2, 4, 8, 16, all/.test(e.message),
  );
  const r = selectCases("default", { grid: "from=paper layers=last eps=64" });
  equal(r.preset.hyper.steps, getPreset("default").hyper.steps);
  deepStrictEqual(r.cases.map((c) => c.id), ["batchtopk-last-x64-k20", "matryoshka-last-x64-k20"]);
  throws(() => selectCases("default", { grid: "from=big" }), MonobenchError);
  equal(selectCases("smoke").cases.length, 4);
});
