/**
 * Progress on stderr (never stdout): on a terminal a single line redrawn with `\r` showing
 * "case i/n" and "step s/S" with a bar, rate and ETAs; otherwise (not a TTY, NO_COLOR or CI set)
 * plain lines printed at most every `plainIntervalMs` plus one at the start and end of each case.
 *
 * The run's ETA comes from per-case cost weights (e.g. the estimated seconds of
 * `estimateCaseSeconds` in src/grid/cases.ts) rescaled on the fly: seconds spent inside cases so
 * far per unit of weight done. Time outside cases (data preparation, raw-neuron MS) does not
 * skew it. Each finished case's line ends with the run's ETA while cases remain.
 */

export interface ProgressOptions {
  /** Sink for progress text (default: synchronous write to stderr). */
  write?: (s: string) => void;
  /** Force TTY mode on/off (default: stderr is a terminal and neither NO_COLOR nor CI is set). */
  tty?: boolean;
  /** Milliseconds between plain-mode lines (default 10 000). */
  plainIntervalMs?: number;
  /** Milliseconds between TTY redraws (default 100). */
  ttyIntervalMs?: number;
  /** Clock in ms (default performance.now). */
  now?: () => number;
  /** Bar width in characters (default 24). */
  barWidth?: number;
}

function envGet(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

/** Whether stderr should get a redrawn progress line. */
export function detectTty(): boolean {
  if (envGet("NO_COLOR") !== undefined || envGet("CI") !== undefined) return false;
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

const encoder = new TextEncoder();
function writeStderr(s: string): void {
  const data = encoder.encode(s);
  let off = 0;
  while (off < data.length) off += Deno.stderr.writeSync(data.subarray(off));
}

/** h:mm:ss or m:ss. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/** One case in flight. */
interface ActiveCase {
  index: number;
  label: string;
  phase: string;
  totalSteps: number;
  stepsDone: number;
  firstPhase: boolean;
  caseStart: number;
  phaseStart: number;
  lastLine: number;
}

export class Progress {
  readonly tty: boolean;
  private readonly write: (s: string) => void;
  private readonly now: () => number;
  private readonly plainInterval: number;
  private readonly ttyInterval: number;
  private readonly barWidth: number;

  private totalCases = 0;
  private lanes = 1;
  private weights: number[] = [];
  private readonly active = new Map<number, ActiveCase>();
  /** The case begun last: what calls without an index address. */
  private current = 0;
  private finished = 0;
  /** Cases reused from an earlier run: their weight is not work left. */
  private skipped = 0;
  private skippedWeight = 0;
  private runStart = 0;
  private doneWeight = 0;
  private doneSeconds = 0;
  private lastDraw = -Infinity;
  private lineShown = false;

  constructor(opts: ProgressOptions = {}) {
    this.write = opts.write ?? writeStderr;
    this.tty = opts.tty ?? detectTty();
    this.now = opts.now ?? (() => performance.now());
    this.plainInterval = opts.plainIntervalMs ?? 10_000;
    this.ttyInterval = opts.ttyIntervalMs ?? 100;
    this.barWidth = opts.barWidth ?? 24;
  }

  /**
   * Start a run of `totalCases` cases; optional relative cost weights (one per case, e.g.
   * estimated seconds) make the overall ETA right from the first case on; `lanes` cases run at
   * a time (default 1).
   */
  start(totalCases: number, weights?: number[], lanes = 1): void {
    this.totalCases = totalCases;
    this.lanes = Math.max(1, Math.floor(lanes));
    this.weights = weights && weights.length === totalCases && weights.every((w) => Number.isFinite(w))
      ? weights.map((w) => Math.max(w, 0))
      : [];
    this.runStart = this.now();
    this.doneWeight = 0;
    this.doneSeconds = 0;
    this.finished = 0;
    this.skipped = 0;
    this.skippedWeight = 0;
    this.active.clear();
    this.current = 0;
  }

  private weight(i: number): number {
    return this.weights.length ? this.weights[i - 1] : 1;
  }

  private totalWeight(): number {
    return this.weights.length ? this.weights.reduce((a, b) => a + b, 0) : this.totalCases;
  }

  /** Begin case `index` (1-based) with `totalSteps` steps of the first phase. */
  beginCase(index: number, label: string, totalSteps: number, phase = "step"): void {
    const t = this.now();
    const a: ActiveCase = {
      index,
      label,
      phase,
      totalSteps: Math.max(0, totalSteps),
      stepsDone: 0,
      firstPhase: true,
      caseStart: t,
      phaseStart: t,
      lastLine: t,
    };
    this.active.set(index, a);
    this.current = index;
    if (!this.tty) this.write(`${this.prefix(index)} ${label}: ${phase} 0/${a.totalSteps}\n`);
    else this.draw(true);
  }

  /** Switch a case (default: the one begun last) to another phase (e.g. "eval") with its own step count. */
  setPhase(phase: string, totalSteps: number, index = this.current): void {
    const a = this.active.get(index);
    if (!a) return;
    a.phase = phase;
    a.firstPhase = false;
    a.totalSteps = Math.max(0, totalSteps);
    a.stepsDone = 0;
    a.phaseStart = a.lastLine = this.now();
    if (!this.tty) this.write(`${this.prefix(index)} ${a.label}: ${phase} 0/${a.totalSteps}\n`);
    else this.draw(true);
  }

  /** Report that `done` steps of a case's current phase (default: the case begun last) are complete. */
  step(done: number, index = this.current): void {
    const a = this.active.get(index);
    if (!a) return;
    a.stepsDone = Math.min(Math.max(0, done), a.totalSteps);
    const t = this.now();
    if (this.tty) {
      this.draw(a.stepsDone === a.totalSteps);
    } else if (t - a.lastLine >= this.plainInterval) {
      a.lastLine = t;
      this.write(this.caseStatus(a) + this.etaSuffix() + "\n");
    }
  }

  /** Finish a case (default: the one begun last), with an optional one-line summary. */
  endCase(summary = "", index = this.current): void {
    const a = this.active.get(index);
    const secs = a ? (this.now() - a.caseStart) / 1000 : 0;
    if (a) {
      this.active.delete(index);
      this.doneWeight += this.weight(index);
      this.doneSeconds += secs;
      this.finished++;
    }
    if (this.current === index) this.current = [...this.active.keys()].pop() ?? 0;
    const eta = this.active.size > 0 || index < this.totalCases ? this.runEta() : NaN;
    const text = `${this.prefix(index)} ${a?.label ?? ""} done in ${formatDuration(secs)}${
      summary ? `: ${summary}` : ""
    }${Number.isFinite(eta) ? ` | total ETA ${formatDuration(eta)}` : ""}`;
    this.clearLine();
    this.write(text + "\n");
    if (this.tty && this.active.size > 0) this.draw(true);
  }

  /** Case `index` needs no work (its result is reused): the ETA leaves it out. */
  skipCase(index: number): void {
    if (this.active.has(index)) return;
    this.skipped++;
    this.skippedWeight += this.weight(index);
  }

  /** Fraction of a case done: training is most of a case, evaluation the rest. */
  private caseFrac(a: ActiveCase): number {
    const S = a.totalSteps, f = S > 0 ? a.stepsDone / S : 0;
    return a.firstPhase ? 0.9 * f : 0.9 + 0.1 * f;
  }

  /**
   * Seconds left in the run: the weight still to do times the seconds per unit of weight seen
   * inside cases so far, over the lanes that can still be busy (NaN before any progress).
   */
  runEta(): number {
    const tw = this.totalWeight() - this.skippedWeight;
    const t = this.now();
    let doneW = this.doneWeight, doneS = this.doneSeconds;
    for (const a of this.active.values()) {
      doneW += this.weight(a.index) * this.caseFrac(a);
      doneS += (t - a.caseStart) / 1000;
    }
    if (!(doneW > 0) || !(tw > 0)) return NaN;
    const left = this.totalCases - this.finished - this.skipped;
    const busy = Math.max(1, Math.min(this.lanes, left));
    return (Math.max(0, tw - doneW) * (doneS / doneW)) / busy;
  }

  /** Print a message line without breaking the progress line. */
  log(message: string): void {
    this.clearLine();
    this.write(message + "\n");
    if (this.tty && this.active.size > 0) this.draw(true);
  }

  /** End the run: clear the progress line and print the total time. */
  finish(summary = ""): void {
    this.clearLine();
    const secs = (this.now() - this.runStart) / 1000;
    this.write(
      `finished ${this.totalCases} case(s) in ${formatDuration(secs)}${summary ? `: ${summary}` : ""}\n`,
    );
  }

  private prefix(index: number): string {
    return `case ${index}/${this.totalCases}`;
  }

  private clearLine(): void {
    if (this.tty && this.lineShown) {
      this.write("\r\x1b[2K");
      this.lineShown = false;
    }
  }

  /** " | total ETA …" when the run has more than one case and an ETA. */
  private etaSuffix(): string {
    if (this.totalCases <= 1) return "";
    const eta = this.runEta();
    return Number.isFinite(eta) ? ` | total ETA ${formatDuration(eta)}` : "";
  }

  /** One case's status: label, bar (TTY, one case in flight), phase steps, rate and ETA. */
  private caseStatus(a: ActiveCase, compact = false): string {
    const elapsed = (this.now() - a.phaseStart) / 1000;
    const S = a.totalSteps, s = a.stepsDone;
    const frac = S > 0 ? s / S : 0;
    const pct = `${Math.floor(frac * 100)}%`;
    if (compact) return `${this.prefix(a.index)} ${a.label} ${a.phase} ${s}/${S} ${pct}`;
    const rate = elapsed > 0 ? s / elapsed : 0;
    const eta = rate > 0 ? (S - s) / rate : NaN;
    const filled = Math.round(frac * this.barWidth);
    const bar = this.tty ? ` [${"#".repeat(filled)}${".".repeat(this.barWidth - filled)}]` : "";
    return `${this.prefix(a.index)} ${a.label}${bar} ${a.phase} ${s}/${S} ${pct}` +
      ` ${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${a.phase}/s ETA ${formatDuration(eta)}`;
  }

  /** The status text (without newline or control codes): every case in flight, then the run ETA. */
  statusLine(): string {
    const all = [...this.active.values()].sort((x, y) => x.index - y.index);
    if (all.length === 0) return "";
    const text = all.length === 1
      ? this.caseStatus(all[0])
      : all.map((a) => this.caseStatus(a, true)).join(" · ");
    return text + this.etaSuffix();
  }

  private draw(force: boolean): void {
    const t = this.now();
    if (!force && t - this.lastDraw < this.ttyInterval) return;
    this.lastDraw = t;
    this.write("\r\x1b[2K" + this.statusLine());
    this.lineShown = true;
  }
}
