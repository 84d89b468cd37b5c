/**
 * Hand-written SVG charts for report.html (no external assets): line charts with optional
 * interval bands or error bars, and scatter charts with two-way error bars. All text is escaped.
 */

/** Escape text for HTML/SVG content and attribute values. */
export function escapeHtml(s: unknown): string {
  return String(s)
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

export interface ChartSeries {
  name: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
  /** Draw point markers (default true for short series). */
  markers?: boolean;
  /**
   * An interval per point (aligned with `points`; NaN bounds are not drawn): a shaded band
   * through the bounds, or vertical error bars.
   */
  interval?: { lo: number[]; hi: number[]; style: "band" | "bars" };
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  /** Log2 x axis (ε, K). */
  xLog2?: boolean;
  /** Tick positions on x (default: nice ticks, or the data's x values on a log axis). */
  xTicks?: number[];
  yMin?: number;
  yMax?: number;
  width?: number;
  height?: number;
}

export const PALETTE = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
  "#bcbd22",
  "#7f7f7f",
  "#aec7e8",
  "#ff9896",
  "#98df8a",
  "#ffbb78",
  "#c5b0d5",
  "#c49c94",
  "#f7b6d2",
  "#9edae5",
  "#dbdb8d",
  "#393b79",
];

/** About `n` round tick values covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, n = 5): number[] {
  // A span of a few ulps would give a step that no longer advances v.
  if (!(hi > lo) || hi - lo <= Math.max(Math.abs(hi), Math.abs(lo)) * 1e-12) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let i = Math.ceil(lo / step - 1e-9); i * step <= hi + step * 1e-9; i++) {
    const v = i * step;
    out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  }
  return out;
}

function fmtTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1000 || a < 0.001) return v.toExponential(0);
  return String(Number(v.toPrecision(3)));
}

/** Render a line chart as an inline `<svg>` element. Series without finite points are skipped. */
export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 330;
  const m = { l: 56, r: 190, t: 30, b: 46 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const tx = (x: number) => (o.xLog2 ? Math.log2(x) : x);
  type P = { x: number; y: number; lo: number; hi: number };
  const series = o.series
    .map((s) => ({
      ...s,
      pts: s.points
        .map(([x, y], i): P => ({ x, y, lo: s.interval?.lo[i] ?? NaN, hi: s.interval?.hi[i] ?? NaN }))
        .filter((p) => Number.isFinite(p.y) && Number.isFinite(p.x) && (!o.xLog2 || p.x > 0))
        .sort((a, b) => a.x - b.x),
    }))
    .filter((s) => s.pts.length > 0);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `role="img" aria-label="${escapeHtml(o.title)}">`,
  );
  parts.push(`<title>${escapeHtml(o.title)}</title>`);
  parts.push(`<text x="${m.l}" y="18" class="ct">${escapeHtml(o.title)}</text>`);
  if (series.length === 0) {
    parts.push(`<text x="${m.l + 10}" y="${m.t + ph / 2}" class="cl">no data</text></svg>`);
    return parts.join("");
  }
  const xs = series.flatMap((s) => s.pts.map((p) => tx(p.x)));
  const ys = series.flatMap((s) => s.pts.flatMap((p) => [p.y, p.lo, p.hi]).filter((v) => Number.isFinite(v)));
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  let y0 = o.yMin ?? Math.min(...ys);
  let y1 = o.yMax ?? Math.max(...ys);
  if (y0 === y1) {
    y0 -= 0.5;
    y1 += 0.5;
  }
  const pad = (y1 - y0) * 0.05;
  if (o.yMin === undefined) y0 -= pad;
  if (o.yMax === undefined) y1 += pad;
  const X = (x: number) => m.l + ((tx(x) - x0) / (x1 - x0)) * pw;
  const Y = (y: number) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;
  // axes and grid
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" class="pa"/>`);
  for (const v of niceTicks(y0, y1)) {
    const y = Y(v).toFixed(1);
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" class="gr"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y}" class="tk" text-anchor="end" dy="0.32em">${fmtTick(v)}</text>`);
  }
  const xTicks = o.xTicks ??
    (o.xLog2 ? [...new Set(series.flatMap((s) => s.pts.map((p) => p.x)))].sort((a, b) => a - b) : null) ??
    niceTicks(x0, x1);
  for (const v of xTicks) {
    if (o.xLog2 && !(v > 0)) continue;
    const x = X(v);
    if (x < m.l - 0.5 || x > m.l + pw + 0.5) continue;
    parts.push(
      `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${m.t + ph}" y2="${m.t + ph + 4}" class="ax"/>`,
    );
    parts.push(
      `<text x="${x.toFixed(1)}" y="${m.t + ph + 16}" class="tk" text-anchor="middle">${fmtTick(v)}</text>`,
    );
  }
  parts.push(
    `<text x="${m.l + pw / 2}" y="${H - 8}" class="cl" text-anchor="middle">${escapeHtml(o.xLabel)}</text>`,
  );
  parts.push(
    `<text x="14" y="${m.t + ph / 2}" class="cl" text-anchor="middle" transform="rotate(-90 14 ${
      m.t + ph / 2
    })">${escapeHtml(o.yLabel)}</text>`,
  );
  // series
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const pts = s.pts;
    const withIv = pts.filter((p) => Number.isFinite(p.lo) && Number.isFinite(p.hi));
    if (s.interval?.style === "band" && withIv.length >= 2) {
      const up = withIv.map((p, j) => `${j ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.hi).toFixed(1)}`).join("");
      const down = [...withIv].reverse().map((p) => `L${X(p.x).toFixed(1)},${Y(p.lo).toFixed(1)}`).join("");
      parts.push(
        `<path d="${up}${down}Z" fill="${
          escapeHtml(color)
        }" fill-opacity="0.18" stroke="none" class="band">` +
          `<title>${escapeHtml(`${s.name}: 95 % interval`)}</title></path>`,
      );
    } else if (s.interval?.style === "bars") {
      for (const p of withIv) parts.push(errorBar(X(p.x), Y(p.lo), Y(p.hi), color, "v"));
    }
    const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join("");
    parts.push(
      `<path d="${d}" fill="none" stroke="${escapeHtml(color)}" stroke-width="1.8"${
        s.dashed ? ' stroke-dasharray="5 4"' : ""
      }><title>${escapeHtml(s.name)}</title></path>`,
    );
    if (s.markers ?? pts.length <= 12) {
      for (const p of pts) {
        const iv = Number.isFinite(p.lo) ? ` [${p.lo.toFixed(4)}, ${p.hi.toFixed(4)}]` : "";
        parts.push(
          `<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="2.6" fill="${escapeHtml(color)}">` +
            `<title>${escapeHtml(`${s.name}: (${fmtTick(p.x)}, ${p.y.toFixed(4)}${iv})`)}</title></circle>`,
        );
      }
    }
    const ly = m.t + 8 + i * 15;
    if (ly < H - 10) {
      parts.push(
        `<line x1="${m.l + pw + 10}" x2="${m.l + pw + 28}" y1="${ly}" y2="${ly}" stroke="${
          escapeHtml(color)
        }" ` +
          `stroke-width="2"${s.dashed ? ' stroke-dasharray="4 3"' : ""}/>`,
      );
      const label = s.name.length > 25 ? s.name.slice(0, 24) + "…" : s.name;
      parts.push(
        `<text x="${m.l + pw + 32}" y="${ly}" class="lg" dy="0.32em"><title>${escapeHtml(s.name)}</title>${
          escapeHtml(label)
        }</text>`,
      );
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

/** An error bar from (x, a) to (x, b) ("v") or from (a, y) to (b, y) ("h"), with caps. */
function errorBar(p: number, a: number, b: number, color: string, dir: "v" | "h"): string {
  const c = escapeHtml(color);
  const [x1, y1, x2, y2] = dir === "v" ? [p, a, p, b] : [a, p, b, p];
  const cap = (x: number, y: number) =>
    dir === "v"
      ? `<line x1="${(x - 3).toFixed(1)}" x2="${(x + 3).toFixed(1)}" y1="${y.toFixed(1)}" y2="${
        y.toFixed(1)
      }"/>`
      : `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${(y - 3).toFixed(1)}" y2="${
        (y + 3).toFixed(1)
      }"/>`;
  return `<g class="eb" stroke="${c}" stroke-width="1.1"><line x1="${x1.toFixed(1)}" x2="${x2.toFixed(1)}" ` +
    `y1="${y1.toFixed(1)}" y2="${y2.toFixed(1)}"/>${cap(x1, y1)}${cap(x2, y2)}</g>`;
}

export interface ScatterPoint {
  x: number;
  y: number;
  /** Interval bounds (NaN or absent: no bar). */
  xlo?: number;
  xhi?: number;
  ylo?: number;
  yhi?: number;
  /** Tooltip. */
  label: string;
}

export interface ScatterSeries {
  name: string;
  color?: string;
  points: ScatterPoint[];
  /** A polyline drawn through these points in order (e.g. the group's Pareto front). */
  line?: [number, number][];
}

export interface ScatterOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ScatterSeries[];
  width?: number;
  height?: number;
}

/** Render a scatter chart with optional two-way error bars and per-series polylines. */
export function scatterChart(o: ScatterOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 360;
  const m = { l: 56, r: 190, t: 30, b: 46 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const series = o.series
    .map((s) => ({ ...s, points: s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)) }))
    .filter((s) => s.points.length > 0);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ` +
      `role="img" aria-label="${escapeHtml(o.title)}">`,
  );
  parts.push(`<title>${escapeHtml(o.title)}</title>`);
  parts.push(`<text x="${m.l}" y="18" class="ct">${escapeHtml(o.title)}</text>`);
  if (series.length === 0) {
    parts.push(`<text x="${m.l + 10}" y="${m.t + ph / 2}" class="cl">no data</text></svg>`);
    return parts.join("");
  }
  const fin = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v);
  const xs = series.flatMap((s) => s.points.flatMap((p) => [p.x, p.xlo, p.xhi].filter(fin)));
  const ys = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.ylo, p.yhi].filter(fin)));
  const range = (v: number[]) => {
    let lo = Math.min(...v), hi = Math.max(...v);
    if (lo === hi) (lo -= 0.5, hi += 0.5);
    const pad = (hi - lo) * 0.05;
    return [lo - pad, hi + pad];
  };
  const [x0, x1] = range(xs);
  const [y0, y1] = range(ys);
  const X = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" class="pa"/>`);
  for (const v of niceTicks(y0, y1)) {
    const y = Y(v).toFixed(1);
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" class="gr"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y}" class="tk" text-anchor="end" dy="0.32em">${fmtTick(v)}</text>`);
  }
  for (const v of niceTicks(x0, x1)) {
    const x = X(v).toFixed(1);
    parts.push(`<line x1="${x}" x2="${x}" y1="${m.t + ph}" y2="${m.t + ph + 4}" class="ax"/>`);
    parts.push(`<text x="${x}" y="${m.t + ph + 16}" class="tk" text-anchor="middle">${fmtTick(v)}</text>`);
  }
  parts.push(
    `<text x="${m.l + pw / 2}" y="${H - 8}" class="cl" text-anchor="middle">${escapeHtml(o.xLabel)}</text>`,
  );
  parts.push(
    `<text x="14" y="${m.t + ph / 2}" class="cl" text-anchor="middle" transform="rotate(-90 14 ${
      m.t + ph / 2
    })">${escapeHtml(o.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    if (s.line && s.line.length >= 2) {
      const d = s.line.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
      parts.push(
        `<path d="${d}" fill="none" stroke="${
          escapeHtml(color)
        }" stroke-width="1.4" stroke-dasharray="4 3">` +
          `<title>${escapeHtml(`${s.name}: Pareto front`)}</title></path>`,
      );
    }
    for (const p of s.points) {
      if (fin(p.ylo) && fin(p.yhi)) parts.push(errorBar(X(p.x), Y(p.ylo), Y(p.yhi), color, "v"));
      if (fin(p.xlo) && fin(p.xhi)) parts.push(errorBar(Y(p.y), X(p.xlo), X(p.xhi), color, "h"));
      parts.push(
        `<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="3" fill="${escapeHtml(color)}">` +
          `<title>${escapeHtml(p.label)}</title></circle>`,
      );
    }
    const ly = m.t + 8 + i * 15;
    if (ly < H - 10) {
      parts.push(
        `<circle cx="${m.l + pw + 19}" cy="${ly}" r="3.5" fill="${escapeHtml(color)}"/>` +
          `<text x="${m.l + pw + 32}" y="${ly}" class="lg" dy="0.32em">${escapeHtml(s.name)}</text>`,
      );
    }
  });
  parts.push("</svg>");
  return parts.join("");
}

/** CSS used by {@link lineChart} and {@link scatterChart} (to inline in the page). */
export const CHART_CSS =
  `.chart{background:#fff;border:1px solid #ddd;margin:4px}.chart .ct{font:600 13px sans-serif;fill:#222}` +
  `.chart .cl{font:12px sans-serif;fill:#333}.chart .tk{font:10px sans-serif;fill:#555}` +
  `.chart .lg{font:10px sans-serif;fill:#333}.chart .pa{fill:none;stroke:#999}` +
  `.chart .gr{stroke:#eee}.chart .ax{stroke:#999}`;
