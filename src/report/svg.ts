/**
 * Hand-written SVG line charts for report.html (no external assets). All text is escaped.
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
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
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
  const series = o.series
    .map((s) => ({
      ...s,
      points: s.points.filter(([x, y]) => Number.isFinite(y) && Number.isFinite(x) && (!o.xLog2 || x > 0)),
    }))
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
  const xs = series.flatMap((s) => s.points.map((p) => tx(p[0])));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
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
    (o.xLog2 ? [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b) : null) ??
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
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    parts.push(
      `<path d="${d}" fill="none" stroke="${escapeHtml(color)}" stroke-width="1.8"${
        s.dashed ? ' stroke-dasharray="5 4"' : ""
      }><title>${escapeHtml(s.name)}</title></path>`,
    );
    if (s.markers ?? pts.length <= 12) {
      for (const [x, y] of pts) {
        parts.push(
          `<circle cx="${X(x).toFixed(1)}" cy="${Y(y).toFixed(1)}" r="2.6" fill="${escapeHtml(color)}">` +
            `<title>${escapeHtml(`${s.name}: (${fmtTick(x)}, ${y.toFixed(4)})`)}</title></circle>`,
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

/** CSS used by {@link lineChart} (to inline in the page). */
export const CHART_CSS =
  `.chart{background:#fff;border:1px solid #ddd;margin:4px}.chart .ct{font:600 13px sans-serif;fill:#222}` +
  `.chart .cl{font:12px sans-serif;fill:#333}.chart .tk{font:10px sans-serif;fill:#555}` +
  `.chart .lg{font:10px sans-serif;fill:#333}.chart .pa{fill:none;stroke:#999}` +
  `.chart .gr{stroke:#eee}.chart .ax{stroke:#999}`;
