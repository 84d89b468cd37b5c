/**
 * Self-contained report.html: inline CSS, hand-written SVG plots, no external assets, all text
 * escaped. Every number is the mean over seeds with its 95 % interval. Plots: sorted MS curves per
 * layer with pointwise bands and the raw-neuron curve (Fig. 5-like), MS mean/max, R² and L0 vs ε
 * with error bars, the K ablation, the Pareto plots of R² against MS and L0, and the comparison
 * view when the report has one.
 */
import { compareLayers, type LayerResult } from "../types.ts";
import { type Comparison, METRIC_LABEL, paretoFront } from "./compare.ts";
import { diffCounts } from "./diff.ts";
import {
  CHART_CSS,
  type ChartSeries,
  escapeHtml,
  lineChart,
  scatterChart,
  type ScatterSeries,
} from "./svg.ts";
import type { CaseAggregate, Stat } from "./stats.ts";
import type { Report } from "./types.ts";
import {
  caseSortKey,
  claimStatusText,
  diffIndex,
  fmt,
  fmtStat,
  reportAggregates,
  reportSources,
  runInfoPairs,
  statWithPaper,
  withPaper,
} from "./format.ts";

const CSS = `body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top;overflow-wrap:break-word;max-width:1100px}th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass,.fail,.na{white-space:nowrap}.pass{color:#176c17;font-weight:600}.fail{color:#b00020;font-weight:600}.na{color:#777}
.within{color:#176c17}.outside{color:#a15c00}.missing{color:#777}.charts{display:flex;flex-wrap:wrap}
.note{color:#555;font-size:12.5px}` + CHART_CSS;

function td(v: string, numeric = false): string {
  return numeric ? `<td class="n">${v}</td>` : `<td>${v}</td>`;
}

function htmlTable(header: string[], rows: string[][]): string {
  return `<table><thead><tr>${header.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>` +
    rows.map((r) => `<tr>${r.join("")}</tr>`).join("") + "</tbody></table>";
}

const clip1 = (v: number) => Math.max(-1, Math.min(1, v));

const iv = (ss: (Stat | undefined)[], style: "band" | "bars") => ({
  lo: ss.map((s) => s?.ci95[0] ?? NaN),
  hi: ss.map((s) => s?.ci95[1] ?? NaN),
  style,
});

/**
 * Sorted MS curves of every case of a layer (mean over seeds with its pointwise 95 % band), the
 * raw-neuron curve dashed (Fig. 5-like).
 */
function curveCharts(aggs: CaseAggregate[], layers: LayerResult[], sources: string[]): string[] {
  const out: string[] = [];
  const layerNames = [...new Set([...layers.map((l) => l.layer), ...aggs.map((c) => c.layer)])]
    .sort(compareLayers);
  for (const layer of layerNames) {
    for (const s of sources) {
      const series: ChartSeries[] = [];
      for (const c of aggs.filter((c) => c.layer === layer)) {
        const m = c.ms.find((x) => x.encoder === s);
        if (!m || m.curve.x.length === 0) continue;
        series.push({
          name: `${c.sae} ×${c.expansion} K${c.k}`,
          points: m.curve.x.map((x, i) => [x, m.curve.mean[i]]),
          // MS lies in [−1, 1]; a t-band from few seeds can overshoot it
          interval: { lo: m.curve.lo.map(clip1), hi: m.curve.hi.map(clip1), style: "band" },
          markers: false,
        });
      }
      const raw = layers.find((l) => l.layer === layer)?.ms.find((x) => x.encoder === s);
      if (raw && raw.curve.length) {
        series.push({ name: "raw neurons", points: curvePoints(raw.curve), color: "#000", dashed: true });
      }
      if (series.length === 0) continue;
      out.push(lineChart({
        title: `Sorted MS, layer ${layer}, source ${s}`,
        xLabel: "neuron rank (fraction, best first)",
        yLabel: "MS",
        series,
      }));
    }
  }
  return out;
}

function curvePoints(curve: number[]): [number, number][] {
  const n = curve.length;
  return curve.map((y, i) => [n === 1 ? 0 : i / (n - 1), y]);
}

/** Series per (layer, SAE) of a case metric against ε, with 95 % error bars. */
function byEps(
  aggs: CaseAggregate[],
  y: (c: CaseAggregate) => Stat | undefined,
  mainK: number,
): ChartSeries[] {
  const groups = new Map<string, CaseAggregate[]>();
  for (const c of aggs) {
    if (c.k !== mainK || !Number.isFinite(y(c)?.mean ?? NaN)) continue;
    const key = `${c.sae}/${c.layer}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(c);
  }
  return [...groups].map(([name, cs]) => ({
    name,
    points: cs.map((c) => [c.expansion, y(c)!.mean] as [number, number]),
    interval: iv(cs.map(y), "bars"),
  }));
}

/** Series per (layer, SAE, ε) of a case metric against K (only groups with ≥ 2 K values). */
function byK(aggs: CaseAggregate[], y: (c: CaseAggregate) => Stat | undefined): ChartSeries[] {
  const groups = new Map<string, CaseAggregate[]>();
  for (const c of aggs) {
    if (!Number.isFinite(y(c)?.mean ?? NaN)) continue;
    const key = `${c.sae}/${c.layer} ×${c.expansion}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(c);
  }
  return [...groups].filter(([, cs]) => new Set(cs.map((c) => c.k)).size >= 2).map(([name, cs]) => ({
    name,
    points: cs.map((c) => [c.k, y(c)!.mean] as [number, number]),
    interval: iv(cs.map(y), "bars"),
  }));
}

const msStat = (c: CaseAggregate, s: string, what: "mean" | "max") =>
  c.ms.find((m) => m.encoder === s)?.[what];

function trendCharts(aggs: CaseAggregate[], sources: string[], mainK: number): string[] {
  const out: string[] = [];
  for (const s of sources) {
    for (const what of ["mean", "max"] as const) {
      const series = byEps(aggs, (c) => msStat(c, s, what), mainK);
      if (series.length) {
        out.push(lineChart({
          title: `MS ${what} vs ε (${s}, K=${mainK})`,
          xLabel: "expansion factor ε",
          yLabel: `MS ${what}`,
          series,
          xLog2: true,
        }));
      }
    }
  }
  const r2 = byEps(aggs, (c) => c.r2, mainK);
  if (r2.length) {
    out.push(
      lineChart({
        title: `R² vs ε (K=${mainK})`,
        xLabel: "expansion factor ε",
        yLabel: "R² %",
        series: r2,
        xLog2: true,
      }),
    );
  }
  const l0 = byEps(aggs, (c) => c.l0, mainK);
  if (l0.length) {
    const eps = [...new Set(l0.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    l0.push({
      name: `K = ${mainK}`,
      points: eps.map((e) => [e, mainK]),
      color: "#000",
      dashed: true,
      markers: false,
    });
    out.push(
      lineChart({
        title: `L0 vs ε (K=${mainK})`,
        xLabel: "expansion factor ε",
        yLabel: "test-time L0",
        series: l0,
        xLog2: true,
      }),
    );
  }
  return out;
}

function kCharts(aggs: CaseAggregate[], sources: string[]): string[] {
  const out: string[] = [];
  for (const s of sources) {
    const ms = byK(aggs, (c) => msStat(c, s, "mean"));
    if (ms.length) {
      out.push(
        lineChart({
          title: `K ablation: MS mean vs K (${s})`,
          xLabel: "K",
          yLabel: "MS mean",
          series: ms,
          xLog2: true,
        }),
      );
    }
  }
  const r2 = byK(aggs, (c) => c.r2);
  if (r2.length) {
    out.push(
      lineChart({ title: "K ablation: R² vs K", xLabel: "K", yLabel: "R² %", series: r2, xLog2: true }),
    );
  }
  const l0 = byK(aggs, (c) => c.l0);
  if (l0.length) {
    const ks = [...new Set(l0.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    l0.push({ name: "L0 = K", points: ks.map((k) => [k, k]), color: "#000", dashed: true, markers: false });
    out.push(
      lineChart({
        title: "K ablation: L0 vs K",
        xLabel: "K",
        yLabel: "test-time L0",
        series: l0,
        xLog2: true,
      }),
    );
  }
  return out;
}

/**
 * Pareto plots across the grid: R² against MS mean (per source; both higher is better) and
 * against L0 (lower is sparser), one colour per SAE variant, 95 % error bars on both axes, and
 * each variant's Pareto front dashed.
 */
function paretoCharts(aggs: CaseAggregate[], sources: string[]): string[] {
  const saes = [...new Set(aggs.map((a) => a.sae))];
  const chart = (
    title: string,
    xLabel: string,
    x: (a: CaseAggregate) => Stat | undefined,
    xBetter: "higher" | "lower",
  ) => {
    const series: ScatterSeries[] = saes.map((sae) => {
      const pts = aggs.filter((a) => a.sae === sae).map((a) => {
        const sx = x(a);
        return {
          x: sx?.mean ?? NaN,
          y: a.r2.mean,
          xlo: sx?.ci95[0],
          xhi: sx?.ci95[1],
          ylo: a.r2.ci95[0],
          yhi: a.r2.ci95[1],
          label: `${a.id} (n=${a.n}): ${xLabel} ${fmtStat(sx, 3)}, R² ${fmtStat(a.r2, 2)}`,
        };
      });
      const front = paretoFront(pts, xBetter).map((i) => [pts[i].x, pts[i].y] as [number, number]);
      front.sort((p, q) => p[0] - q[0]);
      return { name: sae, points: pts, line: front };
    });
    return scatterChart({ title, xLabel, yLabel: "R² %", series });
  };
  const out: string[] = [];
  if (!aggs.some((a) => Number.isFinite(a.r2.mean))) return out;
  for (const s of sources) {
    if (!aggs.some((a) => Number.isFinite(msStat(a, s, "mean")?.mean ?? NaN))) continue;
    out.push(
      chart(`R² vs MS mean (${s}), all cases`, `MS mean (${s})`, (a) => msStat(a, s, "mean"), "higher"),
    );
  }
  out.push(chart("R² vs L0, all cases", "test-time L0", (a) => a.l0, "lower"));
  return out;
}

function verdictClass(v: string): string {
  return v === "better" ? "pass" : v === "worse" ? "fail" : "na";
}

function comparisonHtml(cmp: Comparison): string {
  const e = escapeHtml;
  const parts: string[] = [];
  parts.push(`<h2>Comparison: ${e(cmp.variant)} vs ${e(cmp.references.join(", ") || "none")}</h2>`);
  parts.push(`<p class="note">${e(cmp.method)}; level ${e(Math.round(cmp.level * 1000) / 10)} %.</p>`);
  if (cmp.unmatched.length) {
    parts.push(
      `<p class="note">No reference at the same layer, ε and K for: ${e(cmp.unmatched.join(", "))}.</p>`,
    );
  }
  parts.push(htmlTable(
    ["reference", "metric", "source", "better", "worse", "indistinguishable", "higher", "lower"],
    cmp.summary.map((s) => [
      td(e(s.reference)),
      td(e(METRIC_LABEL[s.metric])),
      td(e(s.source)),
      td(String(s.counts.better), true),
      td(String(s.counts.worse), true),
      td(String(s.counts.indistinguishable), true),
      td(String(s.counts.higher), true),
      td(String(s.counts.lower), true),
    ]),
  ));
  if (cmp.rows.length) {
    parts.push(htmlTable(
      [
        "reference",
        "layer",
        "ε",
        "K",
        "metric",
        "source",
        "variant",
        "reference value",
        "difference",
        "n",
        "verdict",
      ],
      cmp.rows.map((x) => [
        td(e(x.reference)),
        td(e(x.layer)),
        td(String(x.expansion), true),
        td(String(x.k), true),
        td(e(METRIC_LABEL[x.metric])),
        td(e(x.source)),
        td(e(fmtStat(x.variantStat, 3)), true),
        td(e(fmtStat(x.referenceStat, 3)), true),
        td(
          e(
            Number.isFinite(x.diff.lo)
              ? `${fmt(x.diff.mean, 3)} [${fmt(x.diff.lo, 3)}, ${fmt(x.diff.hi, 3)}] (${x.diff.method})`
              : `${fmt(x.diff.mean, 3)} (no interval)`,
          ),
          true,
        ),
        td(String(x.diff.n), true),
        `<td class="${verdictClass(x.verdict)}">${e(x.verdict)}</td>`,
      ]),
    ));
  }
  return parts.join("\n");
}

/** Render the whole report as one self-contained HTML page. */
export function renderHtml(r: Report, opts: { mainK?: number } = {}): string {
  const mainK = opts.mainK ?? 20;
  const sources = reportSources(r);
  const idx = diffIndex(r.diff.rows);
  const aggs = [...reportAggregates(r)].sort((a, b) => caseSortKey(a).localeCompare(caseSortKey(b)));
  const e = escapeHtml;
  const parts: string[] = [];
  parts.push(
    `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>monobench report ${
      e(r.run.id)
    }</title>` +
      `<meta name="viewport" content="width=device-width,initial-scale=1"><style>${CSS}</style></head><body>`,
  );
  parts.push(`<h1>monobench report: ${e(r.run.id)}</h1>`);
  parts.push(htmlTable(["", ""], runInfoPairs(r).map(([k, v]) => [td(e(k)), td(e(v))])));

  parts.push("<h2>Claims</h2>");
  parts.push(htmlTable(
    ["claim", "status", "criterion", "evidence", "paper"],
    r.claims.map((c) => {
      const cls = c.status === "pass" ? "pass" : c.status === "fail" ? "fail" : "na";
      return [
        td(`<b>${e(c.id)}</b>: ${e(c.statement)}`),
        `<td class="${cls}">${e(claimStatusText(c))}</td>`,
        td(e(c.criterion ?? "")),
        td(e(c.evidence)),
        td(e(c.paper ? `${c.ref}; ${c.paper}` : c.ref)),
      ];
    }),
  ));

  parts.push("<h2>Plots</h2>");
  parts.push(
    `<p class="note">Lines are means over seeds; shaded bands and error bars are 95 % Student-t intervals ` +
      `(none with one seed).</p>`,
  );
  const curves = curveCharts(aggs, r.layers, sources);
  if (curves.length) {
    parts.push("<h3>Sorted MS per layer (Fig. 5-like)</h3>", `<div class="charts">${curves.join("")}</div>`);
  }
  const trends = trendCharts(aggs, sources, mainK);
  if (trends.length) {
    parts.push("<h3>MS, R² and L0 vs ε</h3>", `<div class="charts">${trends.join("")}</div>`);
  }
  const ks = kCharts(aggs, sources);
  if (ks.length) parts.push("<h3>K ablation</h3>", `<div class="charts">${ks.join("")}</div>`);
  const pareto = paretoCharts(aggs, sources);
  if (pareto.length) {
    parts.push(
      "<h3>Trade-offs across the grid (Pareto fronts dashed)</h3>",
      `<div class="charts">${pareto.join("")}</div>`,
    );
  }
  if (!curves.length && !trends.length && !ks.length && !pareto.length) {
    parts.push(`<p class="note">No data to plot.</p>`);
  }
  if (r.comparison) parts.push(comparisonHtml(r.comparison));

  parts.push("<h2>Cases</h2>");
  const mapText = Object.entries(r.diff.encoderMap).map(([en, s]) => `${s} ↔ paper ${en}`).join(", ") ||
    "none";
  parts.push(
    `<p class="note">Mean over seeds ± half-width of the 95 % interval (no ± with one seed), n = seeds; ` +
      `the paper's number in parentheses where one corresponds (source mapping: ${e(mapText)}).</p>`,
  );
  const hdr = ["case", "n", "R² %", "L0", "dead %", "train s"];
  for (const s of sources) hdr.push(`MS mean ${e(s)}`, `MS max ${e(s)}`, `&gt; raw ${e(s)}`);
  parts.push(htmlTable(
    hdr,
    aggs.map((c) => {
      const row = [
        td(e(c.id)),
        td(String(c.n), true),
        td(e(statWithPaper(c.r2, idx.get(`${c.id}|r2|`), 1)), true),
        td(e(statWithPaper(c.l0, idx.get(`${c.id}|l0|`), 1)), true),
        td(e(fmtStat(c.deadFraction, 1, 100)), true),
        td(e(fmtStat(c.trainSeconds, 1)), true),
      ];
      for (const s of sources) {
        const m = c.ms.find((x) => x.encoder === s);
        row.push(
          td(e(statWithPaper(m?.mean, idx.get(`${c.id}|ms_mean|${s}`), 3)), true),
          td(e(statWithPaper(m?.max, idx.get(`${c.id}|ms_max|${s}`), 3)), true),
          td(e(fmtStat(c.fracAboveRaw[s], 2)), true),
        );
      }
      return row;
    }),
  ));

  parts.push("<h2>Raw neurons (No SAE)</h2>");
  const lh = ["layer", "source layer", "d"];
  for (const s of sources) lh.push(`MS mean ${e(s)}`, `MS max ${e(s)}`);
  parts.push(htmlTable(
    lh,
    r.layers.map((l) => {
      const row = [td(e(l.layer)), td(e(l.sourceLayer)), td(String(l.d), true)];
      for (const s of sources) {
        const m = l.ms.find((x) => x.encoder === s);
        row.push(
          td(e(withPaper(m?.mean, idx.get(`raw-${l.layer}|ms_mean|${s}`), 4)), true),
          td(e(withPaper(m?.max, idx.get(`raw-${l.layer}|ms_max|${s}`), 3)), true),
        );
      }
      return row;
    }),
  ));

  const n = diffCounts(r.diff);
  parts.push("<h2>Diff against the paper</h2>");
  parts.push(`<p class="note">${e(r.diff.note)}</p>`);
  parts.push(`<p>${n.within} within tolerance, ${n.outside} outside, ${n.missing} missing.</p>`);
  if (r.diff.rows.length) {
    parts.push(htmlTable(
      ["case", "metric", "source", "paper", "ours", "delta", "tol", "status", "table"],
      r.diff.rows.map((d) => [
        td(e(d.caseId)),
        td(e(d.metric)),
        td(e(d.source ? `${d.source} (${d.paperEncoder})` : "")),
        td(fmt(d.paper, 4), true),
        td(
          e(
            d.ours !== null && d.oursCi95
              ? `${fmt(d.ours, 4)} ± ${fmt((d.oursCi95[1] - d.oursCi95[0]) / 2, 4)} (n=${d.n})`
              : fmt(d.ours, 4),
          ),
          true,
        ),
        td(fmt(d.delta, 4), true),
        td(e(d.tolerance), true),
        `<td class="${e(d.status)}">${e(d.status)}</td>`,
        td(e(d.ref)),
      ]),
    ));
  }
  parts.push("</body></html>\n");
  return parts.join("\n");
}
