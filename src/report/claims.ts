/**
 * The paper's qualitative claims, checked on whatever subset of the grid a run covers. A claim
 * with no applicable data is "n/a". Trend claims (c, d, e) are judged on the average over all
 * applicable series (a series = one layer × SAE × K × similarity source, varying ε; or varying K),
 * and the evidence says how many single series agree.
 */
import type { CaseResult, LayerResult, MsSummary } from "../types.ts";
import type { Claim, ClaimStatus } from "./types.ts";

export interface ClaimOptions {
  /** (b) minimum fraction of latents above the raw neurons at ε = 1 (default 0.5: "most"). */
  fracAboveMin?: number;
  /** (f) largest BatchTopK − Matryoshka R² gap (points) still called "a few points" (default 6). */
  r2GapMax?: number;
  /** (g) allowed |L0 − K| as a fraction of K (default 0.3), at least `l0AbsTol` (default 1). */
  l0RelTol?: number;
  l0AbsTol?: number;
  /** K of the main grid (default 20); claims (b)–(d) use cases with this K. */
  mainK?: number;
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : String(x));
const f3 = (x: number) => (Number.isFinite(x) ? x.toFixed(3) : String(x));
const sgn = (x: number, f = f3) => (x >= 0 ? "+" : "") + f(x);
const mean = (a: number[]) => a.reduce((s, x) => s + x, 0) / a.length;

function ms(c: { ms: MsSummary[] }, source: string): MsSummary | undefined {
  return c.ms.find((m) => m.encoder === source);
}

function sources(cases: readonly CaseResult[]): string[] {
  const s = new Set<string>();
  for (const c of cases) for (const m of c.ms) s.add(m.encoder);
  return [...s];
}

/**
 * MS cannot exceed 1: a best MS this close to 1 is saturated (with label similarity, any latent
 * firing only on images of one class scores exactly 1). Saturated maxima neither "beat" nor "lose
 * to" each other, and a series already saturated at its smallest ε cannot grow.
 */
const MS_CEILING = 0.999;

function claim(id: string, statement: string, ref: string, status: ClaimStatus, evidence: string): Claim {
  return { id, statement, ref, status, evidence };
}

function listSome(items: string[], n = 3): string {
  return items.length <= n ? items.join("; ") : `${items.slice(0, n).join("; ")}; … (+${items.length - n})`;
}

/** Series of a metric over a varying key, grouped by the remaining keys. */
function series(
  cases: readonly CaseResult[],
  groupKey: (c: CaseResult) => string | null,
  x: (c: CaseResult) => number,
  y: (c: CaseResult) => number | undefined,
): Map<string, Map<number, number>> {
  const out = new Map<string, Map<number, number>>();
  for (const c of cases) {
    const g = groupKey(c);
    const v = y(c);
    if (g === null || v === undefined || !Number.isFinite(v)) continue;
    if (!out.has(g)) out.set(g, new Map());
    out.get(g)!.set(x(c), v);
  }
  return out;
}

// (a) ------------------------------------------------------------------------------------------
function claimSaeBeatsRaw(cases: readonly CaseResult[], layers: readonly LayerResult[]): Claim {
  const id = "sae-beats-raw";
  const statement = "SAE latents are more monosemantic than the raw neurons: best and mean MS of every SAE " +
    "exceed the layer's raw-neuron best and mean (per layer and similarity source)";
  const ref = "§4.2, Table 1 (and Tables A2–A7)";
  let n = 0;
  let ok = 0;
  const fails: string[] = [];
  const perSource = new Map<string, { dBest: number[]; dMean: number[] }>();
  for (const c of cases) {
    const layer = layers.find((l) => l.layer === c.layer);
    if (!layer) continue;
    for (const m of c.ms) {
      const raw = ms(layer, m.encoder);
      if (!raw) continue;
      for (const [what, ours, base] of [["best", m.max, raw.max], ["mean", m.mean, raw.mean]] as const) {
        if (!Number.isFinite(ours) || !Number.isFinite(base)) continue;
        n++;
        if (ours > base || (what === "best" && ours >= MS_CEILING && base >= MS_CEILING)) ok++;
        else fails.push(`${c.id}/${m.encoder} ${what} ${f3(ours)} ≤ raw ${f3(base)}`);
        if (!perSource.has(m.encoder)) perSource.set(m.encoder, { dBest: [], dMean: [] });
        (what === "best" ? perSource.get(m.encoder)!.dBest : perSource.get(m.encoder)!.dMean).push(
          ours - base,
        );
      }
    }
  }
  if (n === 0) {
    return claim(id, statement, ref, "n/a", "no case with raw-neuron MS of the same layer and source");
  }
  const per = [...perSource].map(([s, d]) =>
    `${s}: best ${d.dBest.length ? sgn(mean(d.dBest)) : "–"}, mean ${
      d.dMean.length ? sgn(mean(d.dMean)) : "–"
    } vs raw`
  );
  let ev = `${ok}/${n} comparisons hold (avg margin ${per.join("; ")})`;
  if (fails.length) ev += `; fails: ${listSome(fails)}`;
  return claim(id, statement, ref, ok === n ? "pass" : "fail", ev);
}

// (b) ------------------------------------------------------------------------------------------
function claimFracAboveRaw(cases: readonly CaseResult[], o: Required<ClaimOptions>): Claim {
  const id = "most-latents-above-raw";
  const statement =
    `At ε=1, most SAE latents (paper: ≈90 %) score above the raw neurons (fraction ≥ ${o.fracAboveMin} for every SAE and source)`;
  const ref = "Fig. 5a, §4.2";
  const vals: { label: string; v: number }[] = [];
  for (const c of cases) {
    if (c.expansion !== 1 || c.k !== o.mainK) continue;
    for (const [s, v] of Object.entries(c.fracAboveRaw ?? {})) {
      if (Number.isFinite(v)) vals.push({ label: `${c.id}/${s}`, v });
    }
  }
  if (vals.length === 0) {
    return claim(id, statement, ref, "n/a", `no ε=1, K=${o.mainK} case with fracAboveRaw`);
  }
  const low = vals.filter((x) => !(x.v >= o.fracAboveMin));
  const vs = vals.map((x) => x.v);
  let ev = `fraction above raw: min ${f2(Math.min(...vs))}, mean ${f2(mean(vs))} over ${vals.length} ` +
    `(case, source) pairs (paper ≈0.90)`;
  if (low.length) ev += `; below ${o.fracAboveMin}: ${listSome(low.map((x) => `${x.label} ${f2(x.v)}`))}`;
  return claim(id, statement, ref, low.length === 0 ? "pass" : "fail", ev);
}

// (c) ------------------------------------------------------------------------------------------
function claimPeakAt4(cases: readonly CaseResult[], o: Required<ClaimOptions>): Claim {
  const id = "ms-peaks-at-eps4";
  const statement = "Overall MS (mean over latents) rises with ε up to ε=4, then falls";
  const ref = "Fig. 5, §4.2 (Table A2)";
  const rises: number[] = [];
  const falls: number[] = [];
  let lo = 0;
  let hi = 0;
  for (const s of sources(cases)) {
    const ser = series(
      cases,
      (c) => (c.k === o.mainK ? `${c.layer}|${c.sae}|${s}` : null),
      (c) => c.expansion,
      (c) => ms(c, s)?.mean,
    );
    for (const pts of ser.values()) {
      const eps = [...pts.keys()].sort((a, b) => a - b);
      if (!pts.has(4) || eps[0] >= 4 || eps[eps.length - 1] <= 4) continue;
      lo = eps[0];
      hi = eps[eps.length - 1];
      rises.push(pts.get(4)! - pts.get(eps[0])!);
      falls.push(pts.get(4)! - pts.get(eps[eps.length - 1])!);
    }
  }
  if (rises.length === 0) {
    return claim(
      id,
      statement,
      ref,
      "n/a",
      "needs a series (layer, SAE, source) with ε=4 and ε below and above 4",
    );
  }
  const r = mean(rises);
  const f = mean(falls);
  const ev = `over ${rises.length} series: mean MS changes ${sgn(r)} from the smallest ε to ε=4 ` +
    `(${rises.filter((x) => x > 0).length}/${rises.length} series rise) and ${
      sgn(-f)
    } from ε=4 to the largest ε ` +
    `(${falls.filter((x) => x > 0).length}/${falls.length} fall)` +
    (rises.length === 1 ? ` (ε ${lo}→4→${hi})` : "");
  return claim(id, statement, ref, r > 0 && f > 0 ? "pass" : "fail", ev);
}

// (d) ------------------------------------------------------------------------------------------
function claimBestGrows(cases: readonly CaseResult[], o: Required<ClaimOptions>): Claim {
  const id = "best-ms-grows-with-eps";
  const statement = "The best MS grows with the expansion factor ε";
  const ref = "Table 1a, §4.2";
  const diffs: { label: string; d: number }[] = [];
  let saturated = 0;
  for (const s of sources(cases)) {
    const ser = series(
      cases,
      (c) => (c.k === o.mainK ? `${c.layer}|${c.sae}|${s}` : null),
      (c) => c.expansion,
      (c) => ms(c, s)?.max,
    );
    for (const [key, pts] of ser) {
      const eps = [...pts.keys()].sort((a, b) => a - b);
      if (eps.length < 2) continue;
      if (pts.get(eps[0])! >= MS_CEILING) {
        saturated++;
        continue;
      }
      const d = pts.get(eps[eps.length - 1])! - pts.get(eps[0])!;
      diffs.push({ label: `${key.replaceAll("|", "/")} ε${eps[0]}→${eps[eps.length - 1]}`, d });
    }
  }
  if (diffs.length === 0) {
    return claim(
      id,
      statement,
      ref,
      "n/a",
      saturated
        ? `all ${saturated} series are saturated (best MS ≥ ${MS_CEILING}) at their smallest ε`
        : "needs a series with at least two ε values",
    );
  }
  const m = mean(diffs.map((x) => x.d));
  const up = diffs.filter((x) => x.d > 0).length;
  let ev = `best MS changes by ${
    sgn(m)
  } on average from the smallest to the largest ε; ${up}/${diffs.length} series grow`;
  if (saturated) ev += ` (${saturated} series saturated at their smallest ε left out)`;
  const down = diffs.filter((x) => !(x.d > 0));
  if (down.length) ev += `; not growing: ${listSome(down.map((x) => `${x.label} ${sgn(x.d)}`))}`;
  return claim(id, statement, ref, m > 0 && up * 2 >= diffs.length ? "pass" : "fail", ev);
}

// (e) ------------------------------------------------------------------------------------------
function claimLowerK(cases: readonly CaseResult[]): Claim {
  const id = "lower-k-higher-ms";
  const statement = "A lower K gives a higher MS overall (mean over latents)";
  const ref = "Table A11, Fig. 5b";
  const diffs: { label: string; d: number }[] = [];
  for (const s of sources(cases)) {
    const ser = series(
      cases,
      (c) => `${c.layer}|${c.sae}|x${c.expansion}|${s}`,
      (c) => c.k,
      (c) => ms(c, s)?.mean,
    );
    for (const [key, pts] of ser) {
      const ks = [...pts.keys()].sort((a, b) => a - b);
      if (ks.length < 2) continue;
      diffs.push({
        label: `${key.replaceAll("|", "/")} K${ks[0]}→${ks[ks.length - 1]}`,
        d: pts.get(ks[0])! - pts.get(ks[ks.length - 1])!,
      });
    }
  }
  if (diffs.length === 0) {
    return claim(id, statement, ref, "n/a", "needs a series with at least two K values");
  }
  const m = mean(diffs.map((x) => x.d));
  const up = diffs.filter((x) => x.d > 0).length;
  let ev =
    `mean MS at the smallest K exceeds the largest K's by ${sgn(m)} on average; ${up}/${diffs.length} ` +
    `series agree (paper: 0.37 at K=1 vs 0.07 at K=50)`;
  const bad = diffs.filter((x) => !(x.d > 0));
  if (bad.length) ev += `; disagree: ${listSome(bad.map((x) => `${x.label} ${sgn(x.d)}`))}`;
  return claim(id, statement, ref, m > 0 && up * 2 >= diffs.length ? "pass" : "fail", ev);
}

// (f) ------------------------------------------------------------------------------------------
function claimMatryoshkaR2(cases: readonly CaseResult[], o: Required<ClaimOptions>): Claim {
  const id = "matryoshka-r2-lower";
  const statement =
    `Matryoshka's R² is a few points (paper ≈2–3) below BatchTopK's at equal layer, ε and K ` +
    `(mean gap in (0, ${o.r2GapMax}] points)`;
  const ref = "Table A9, §4.2";
  const byKey = new Map<string, { b?: number; m?: number }>();
  for (const c of cases) {
    if ((c.sae !== "batchtopk" && c.sae !== "matryoshka") || !Number.isFinite(c.r2)) continue;
    const key = `${c.layer}/x${c.expansion}/k${c.k}`;
    if (!byKey.has(key)) byKey.set(key, {});
    byKey.get(key)![c.sae === "batchtopk" ? "b" : "m"] = c.r2;
  }
  const gaps: number[] = [];
  for (const v of byKey.values()) if (v.b !== undefined && v.m !== undefined) gaps.push(v.b - v.m);
  if (gaps.length === 0) {
    return claim(
      id,
      statement,
      ref,
      "n/a",
      "needs a BatchTopK and a Matryoshka case at the same layer, ε and K",
    );
  }
  const g = mean(gaps);
  const ev = `BatchTopK − Matryoshka R²: mean ${sgn(g, f2)} points over ${gaps.length} pairs ` +
    `(range ${f2(Math.min(...gaps))} to ${f2(Math.max(...gaps))}; Matryoshka lower in ${
      gaps.filter((x) => x > 0).length
    }/${gaps.length})`;
  return claim(id, statement, ref, g > 0 && g <= o.r2GapMax ? "pass" : "fail", ev);
}

// (g) ------------------------------------------------------------------------------------------
function claimL0(cases: readonly CaseResult[], o: Required<ClaimOptions>): Claim {
  const id = "l0-near-k";
  const statement =
    `Test-time L0 (thresholded encode) stays close to K (|L0 − K| ≤ max(${o.l0RelTol}·K, ${o.l0AbsTol}))`;
  const ref = "Table A10, Table A11";
  const ratios: number[] = [];
  const bad: string[] = [];
  for (const c of cases) {
    if (!Number.isFinite(c.l0) || !(c.k > 0)) continue;
    ratios.push(c.l0 / c.k);
    if (Math.abs(c.l0 - c.k) > Math.max(o.l0RelTol * c.k, o.l0AbsTol)) bad.push(`${c.id} L0 ${f2(c.l0)}`);
  }
  if (ratios.length === 0) return claim(id, statement, ref, "n/a", "no case with a finite L0");
  let ev = `L0/K from ${f2(Math.min(...ratios))} to ${f2(Math.max(...ratios))} over ${ratios.length} cases ` +
    `(paper: 0.90–1.26)`;
  if (bad.length) ev += `; off: ${listSome(bad)}`;
  return claim(id, statement, ref, bad.length === 0 ? "pass" : "fail", ev);
}

/** Check the paper's qualitative claims (a)–(g) on a run's results. */
export function checkClaims(
  cases: readonly CaseResult[],
  layers: readonly LayerResult[],
  opts: ClaimOptions = {},
): Claim[] {
  const o: Required<ClaimOptions> = {
    fracAboveMin: opts.fracAboveMin ?? 0.5,
    r2GapMax: opts.r2GapMax ?? 6,
    l0RelTol: opts.l0RelTol ?? 0.3,
    l0AbsTol: opts.l0AbsTol ?? 1,
    mainK: opts.mainK ?? 20,
  };
  return [
    claimSaeBeatsRaw(cases, layers),
    claimFracAboveRaw(cases, o),
    claimPeakAt4(cases, o),
    claimBestGrows(cases, o),
    claimLowerK(cases),
    claimMatryoshkaR2(cases, o),
    claimL0(cases, o),
  ];
}
