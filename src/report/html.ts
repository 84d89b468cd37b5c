/**
 * Self-contained report.html: inline CSS, hand-written SVG plots, no external assets, all text
 * escaped. Plots: sorted MS curves per layer with the raw-neuron curve (Fig. 5-like), MS mean/max
 * vs ε per layer and SAE, R² vs ε, L0 vs ε, and the K ablation.
 */
import type { CaseResult, LayerResult } from "../types.ts";
import { diffCounts } from "./diff.ts";
import { CHART_CSS, type ChartSeries, escapeHtml, lineChart } from "./svg.ts";
import type { Report } from "./types.ts";
import { caseSortKey, diffIndex, fmt, reportSources, runInfoPairs, withPaper } from "./format.ts";

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

const layerOrder = (l: string) => ["11", "17", "22", "23", "last"].indexOf(l);

/** Sorted MS curves of every case of a layer, with the raw-neuron curve dashed (Fig. 5-like). */
function curveCharts(cases: CaseResult[], layers: LayerResult[], sources: string[]): string[] {
  const out: string[] = [];
  const layerNames = [...new Set([...layers.map((l) => l.layer), ...cases.map((c) => c.layer)])]
    .sort((a, b) => layerOrder(a) - layerOrder(b));
  for (const layer of layerNames) {
    for (const s of sources) {
      const series: ChartSeries[] = [];
      for (const c of cases.filter((c) => c.layer === layer)) {
        const m = c.ms.find((x) => x.encoder === s);
        if (m && m.curve.length) {
          series.push({ name: `${c.sae} ×${c.expansion} K${c.k}`, points: curvePoints(m.curve) });
        }
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

/** Series per (layer, SAE[, K]) of a case metric against ε. */
function byEps(cases: CaseResult[], y: (c: CaseResult) => number | undefined, mainK: number): ChartSeries[] {
  const groups = new Map<string, [number, number][]>();
  for (const c of cases) {
    if (c.k !== mainK) continue;
    const v = y(c);
    if (v === undefined || !Number.isFinite(v)) continue;
    const key = `${c.sae}/${c.layer}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push([c.expansion, v]);
  }
  return [...groups].map(([name, points]) => ({ name, points }));
}

/** Series per (layer, SAE, ε) of a case metric against K (only groups with ≥ 2 K values). */
function byK(cases: CaseResult[], y: (c: CaseResult) => number | undefined): ChartSeries[] {
  const groups = new Map<string, [number, number][]>();
  for (const c of cases) {
    const v = y(c);
    if (v === undefined || !Number.isFinite(v)) continue;
    const key = `${c.sae}/${c.layer} ×${c.expansion}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push([c.k, v]);
  }
  return [...groups].filter(([, p]) => new Set(p.map((x) => x[0])).size >= 2).map(([name, points]) => ({
    name,
    points,
  }));
}

function trendCharts(cases: CaseResult[], sources: string[], mainK: number): string[] {
  const out: string[] = [];
  const msOf = (c: CaseResult, s: string) => c.ms.find((m) => m.encoder === s);
  for (const s of sources) {
    for (
      const [what, f] of [["mean", (c: CaseResult) => msOf(c, s)?.mean], [
        "max",
        (c: CaseResult) => msOf(c, s)?.max,
      ]] as const
    ) {
      const series = byEps(cases, f, mainK);
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
  const r2 = byEps(cases, (c) => c.r2, mainK);
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
  const l0 = byEps(cases, (c) => c.l0, mainK);
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

function kCharts(cases: CaseResult[], sources: string[]): string[] {
  const out: string[] = [];
  for (const s of sources) {
    const ms = byK(cases, (c) => c.ms.find((m) => m.encoder === s)?.mean);
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
  const r2 = byK(cases, (c) => c.r2);
  if (r2.length) {
    out.push(
      lineChart({ title: "K ablation: R² vs K", xLabel: "K", yLabel: "R² %", series: r2, xLog2: true }),
    );
  }
  const l0 = byK(cases, (c) => c.l0);
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

/** Render the whole report as one self-contained HTML page. */
export function renderHtml(r: Report, opts: { mainK?: number } = {}): string {
  const mainK = opts.mainK ?? 20;
  const sources = reportSources(r);
  const idx = diffIndex(r.diff.rows);
  const cases = [...r.cases].sort((a, b) => caseSortKey(a).localeCompare(caseSortKey(b)));
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
    ["claim", "status", "evidence", "paper"],
    r.claims.map((c) => {
      const cls = c.status === "pass" ? "pass" : c.status === "fail" ? "fail" : "na";
      return [
        td(`<b>${e(c.id)}</b>: ${e(c.statement)}`),
        `<td class="${cls}">${e(c.status)}</td>`,
        td(e(c.evidence)),
        td(e(c.ref)),
      ];
    }),
  ));

  parts.push("<h2>Plots</h2>");
  const curves = curveCharts(cases, r.layers, sources);
  if (curves.length) {
    parts.push("<h3>Sorted MS per layer (Fig. 5-like)</h3>", `<div class="charts">${curves.join("")}</div>`);
  }
  const trends = trendCharts(cases, sources, mainK);
  if (trends.length) {
    parts.push("<h3>MS, R² and L0 vs ε</h3>", `<div class="charts">${trends.join("")}</div>`);
  }
  const ks = kCharts(cases, sources);
  if (ks.length) parts.push("<h3>K ablation</h3>", `<div class="charts">${ks.join("")}</div>`);
  if (!curves.length && !trends.length && !ks.length) parts.push(`<p class="note">No data to plot.</p>`);

  parts.push("<h2>Cases</h2>");
  const mapText = Object.entries(r.diff.encoderMap).map(([en, s]) => `${s} ↔ paper ${en}`).join(", ") ||
    "none";
  parts.push(
    `<p class="note">Ours, with the paper's number in parentheses where one corresponds (source mapping: ${
      e(mapText)
    }).</p>`,
  );
  const hdr = ["case", "R² %", "L0", "dead %", "train s"];
  for (const s of sources) hdr.push(`MS mean ${e(s)}`, `MS max ${e(s)}`, `&gt; raw ${e(s)}`);
  parts.push(htmlTable(
    hdr,
    cases.map((c) => {
      const row = [
        td(e(c.id)),
        td(e(withPaper(c.r2, idx.get(`${c.id}|r2|`), 1)), true),
        td(e(withPaper(c.l0, idx.get(`${c.id}|l0|`), 1)), true),
        td(fmt(c.deadFraction * 100, 1), true),
        td(fmt(c.trainSeconds, 1), true),
      ];
      for (const s of sources) {
        const m = c.ms.find((x) => x.encoder === s);
        row.push(
          td(e(withPaper(m?.mean, idx.get(`${c.id}|ms_mean|${s}`), 3)), true),
          td(e(withPaper(m?.max, idx.get(`${c.id}|ms_max|${s}`), 3)), true),
          td(fmt(c.fracAboveRaw?.[s], 2), true),
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
        td(fmt(d.ours, 4), true),
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
