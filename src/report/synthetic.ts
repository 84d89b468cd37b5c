/**
 * Synthetic results for tests and demos: CaseResult/LayerResult builders, and the paper's own
 * numbers (from the fixtures) dressed up as a run, so that the diff and the claims can be
 * checked against the source they come from.
 */
import type { CaseResult, LayerResult, MsSummary, PaperLayer } from "../types.ts";
import { caseId } from "../grid/cases.ts";
import type { FixtureRow } from "./fixtures.ts";
import { type Report, REPORT_VERSION } from "./types.ts";

/** An MsSummary with a plausible descending curve between max and min. */
export function syntheticMs(
  encoder: string,
  mean: number,
  max: number,
  min = 0,
  std = 0.1,
  count = 100,
): MsSummary {
  const n = 20;
  const curve: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = i / (n - 1);
    curve.push(max + (min - max) * Math.sqrt(t));
  }
  return { encoder, mean, std, min, max, nanCount: 0, count, curve };
}

/** A CaseResult with defaults for everything not given. */
export function syntheticCase(
  p: Partial<CaseResult> & Pick<CaseResult, "layer" | "sae" | "expansion">,
): CaseResult {
  const k = p.k ?? 20;
  const d = p.d ?? 64;
  return {
    id: p.id ?? caseId(p.sae, p.layer, p.expansion, k),
    seed: 0,
    sourceLayer: `src-${p.layer}`,
    d,
    width: d * p.expansion,
    k,
    steps: 100,
    batchSize: 256,
    lr: 7e-4,
    backend: "cpu",
    trainSeconds: 1.5,
    finalLoss: 0.3,
    ms: [],
    fracAboveRaw: {},
    r2: 70,
    fve: { fve: 0.7 },
    l0: k,
    deadCount: 0,
    deadFraction: 0,
    deadTrain: 0,
    checkpoint: `ckpt/${p.id ?? caseId(p.sae, p.layer, p.expansion, k)}`,
    ...p,
  };
}

/**
 * Seed replicates of cases: each case once per seed, with `perturb(case, seed, index)` applied
 * (e.g. a deterministic jitter of its metrics).
 */
export function withSeeds(
  cases: readonly CaseResult[],
  seeds: readonly number[],
  perturb: (c: CaseResult, seed: number, i: number) => Partial<CaseResult> = () => ({}),
): CaseResult[] {
  return seeds.flatMap((seed, i) => cases.map((c) => ({ ...c, seed, ...perturb(c, seed, i) })));
}

export function syntheticLayer(layer: PaperLayer, ms: MsSummary[], d = 64): LayerResult {
  return { layer, sourceLayer: `src-${layer}`, d, ms };
}

/** A Report around given results (run info filled with fixed values). */
export function syntheticReport(
  cases: CaseResult[],
  layers: LayerResult[],
  extra: Partial<Omit<Report, "cases" | "layers">> = {},
): Report {
  return {
    version: REPORT_VERSION,
    run: {
      id: "test-run",
      startedAt: "2025-01-01T00:00:00.000Z",
      finishedAt: "2025-01-01T00:10:00.000Z",
      preset: "smoke",
      grid: "",
      backend: "cpu",
      device: "test device",
      dataset: "synthetic",
      denoVersion: "2.9.6",
      seed: 1,
      options: {},
    },
    layers,
    cases,
    diff: {
      encoderMap: {},
      tolerances: { ms_max: 0.15, ms_min: 0.1, ms_mean: 0.05, r2: 5, l0: 1 },
      rows: [],
      note: "",
    },
    claims: [],
    ...extra,
  };
}

/**
 * The paper's CLIP ViT-L results as a run, with MS source "dinov2": max from Table 1a, min from
 * Table A5, mean ± std from Table A2, R² from Table A9, L0 from Table A10, the K ablation from
 * Table A11, raw neurons from the "No SAE" rows. fracAboveRaw is unknown (not published) and
 * left empty.
 */
export function paperAsResults(fx: readonly FixtureRow[]): { cases: CaseResult[]; layers: LayerResult[] } {
  const model = "clip-vit-l14-336";
  const get = (
    table: string,
    metric: string,
    sae: string,
    layer: string,
    eps: number | null,
    k: number | null,
  ) =>
    fx.find((r) =>
      r.table === table && r.metric === metric && r.sae === sae && r.layer === layer && r.expansion === eps &&
      r.k === k && r.model === model && r.condition === ""
    );
  const cases = new Map<string, CaseResult>();
  for (const r of fx) {
    if (r.model !== model || r.condition !== "" || (r.sae !== "batchtopk" && r.sae !== "matryoshka")) {
      continue;
    }
    if (r.expansion === null || r.k === null) continue;
    const layer = r.layer as PaperLayer;
    const id = caseId(r.sae, layer, r.expansion, r.k);
    if (cases.has(id)) continue;
    const pick = (metric: string, tables: string[]) => {
      for (const t of tables) {
        const x = get(t, metric, r.sae, r.layer, r.expansion, r.k);
        if (x) return x;
      }
      return undefined;
    };
    const max = pick("ms_max", ["Table 1a", "Table A11"]);
    const min = pick("ms_min", ["Table A5", "Table A11"]);
    const mean = pick("ms_mean", ["Table A2", "Table A11"]);
    const r2 = pick("r2", ["Table A9", "Table A11"]);
    const l0 = pick("l0", ["Table A10", "Table A11"]);
    if (!max || !min || !mean || !r2 || !l0) continue;
    cases.set(
      id,
      syntheticCase({
        id,
        layer,
        sae: r.sae,
        expansion: r.expansion,
        k: r.k,
        d: layer === "last" ? 768 : 1024,
        ms: [syntheticMs("dinov2", mean.value, max.value, min.value, mean.std ?? 0)],
        r2: r2.value,
        l0: l0.value,
      }),
    );
  }
  const layers: LayerResult[] = [];
  for (const layer of ["11", "17", "22", "23", "last"] as PaperLayer[]) {
    const mx = get("Table 1a", "ms_max", "none", layer, null, null);
    const mn = get("Table A5", "ms_min", "none", layer, null, null);
    const me = get("Table A2", "ms_mean", "none", layer, null, null);
    if (mx && mn && me) {
      layers.push(
        syntheticLayer(
          layer,
          [syntheticMs("dinov2", me.value, mx.value, mn.value, me.std ?? 0)],
          layer === "last" ? 768 : 1024,
        ),
      );
    }
  }
  return { cases: [...cases.values()], layers };
}
