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

export class Progress {
  readonly tty: boolean;
  private readonly write: (s: string) => void;
  private readonly now: () => number;
  private readonly plainInterval: number;
  private readonly ttyInterval: number;
  private readonly barWidth: number;

  private totalCases = 0;
  private weights: number[] = [];
  private caseIndex = 0; // 1-based, 0 = none
  private caseLabel = "";
  private phase = "step";
  private totalSteps = 0;
  private stepsDone = 0;
  private runStart = 0;
  private caseStart = 0;
  private phaseStart = 0;
  private doneWeight = 0;
  private doneSeconds = 0;
  private firstPhase = true;
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
   * estimated seconds) make the overall ETA right from the first case on.
   */
  start(totalCases: number, weights?: number[]): void {
    this.totalCases = totalCases;
    this.weights = weights && weights.length === totalCases && weights.every((w) => Number.isFinite(w))
      ? weights.map((w) => Math.max(w, 0))
      : [];
    this.runStart = this.now();
    this.doneWeight = 0;
    this.doneSeconds = 0;
    this.caseIndex = 0;
  }

  private weight(i: number): number {
    return this.weights.length ? this.weights[i - 1] : 1;
  }

  private totalWeight(): number {
    return this.weights.length ? this.weights.reduce((a, b) => a + b, 0) : this.totalCases;
  }

  /** Begin case `index` (1-based) with `totalSteps` steps of the first phase. */
  beginCase(index: number, label: string, totalSteps: number, phase = "step"): void {
    this.caseIndex = index;
    this.caseLabel = label;
    this.phase = phase;
    this.totalSteps = Math.max(0, totalSteps);
    this.stepsDone = 0;
    this.firstPhase = true;
    this.caseStart = this.now();
    this.phaseStart = this.now();
    this.lastDraw = this.now();
    if (!this.tty) this.write(`${this.prefix()} ${label}: ${phase} 0/${this.totalSteps}\n`);
    else this.draw(true);
  }

  /** Switch the current case to another phase (e.g. "eval") with its own step count. */
  setPhase(phase: string, totalSteps: number): void {
    this.phase = phase;
    this.firstPhase = false;
    this.totalSteps = Math.max(0, totalSteps);
    this.stepsDone = 0;
    this.phaseStart = this.now();
    this.lastDraw = this.now();
    if (!this.tty) this.write(`${this.prefix()} ${this.caseLabel}: ${phase} 0/${this.totalSteps}\n`);
    else this.draw(true);
  }

  /** Report that `done` steps of the current phase are complete. */
  step(done: number): void {
    this.stepsDone = Math.min(Math.max(0, done), this.totalSteps);
    const t = this.now();
    if (this.tty) {
      this.draw(this.stepsDone === this.totalSteps);
    } else if (t - this.lastDraw >= this.plainInterval) {
      this.lastDraw = t;
      this.write(this.statusLine() + "\n");
    }
  }

  /** Finish the current case, with an optional one-line summary. */
  endCase(summary = ""): void {
    const secs = (this.now() - this.caseStart) / 1000;
    if (this.caseIndex > 0) {
      this.doneWeight += this.weight(this.caseIndex);
      this.doneSeconds += secs;
    }
    const index = this.caseIndex;
    this.caseIndex = 0;
    const eta = index < this.totalCases ? this.runEta() : NaN;
    const text = `${this.prefix(index)} ${this.caseLabel} done in ${formatDuration(secs)}${
      summary ? `: ${summary}` : ""
    }${Number.isFinite(eta) ? ` | total ETA ${formatDuration(eta)}` : ""}`;
    this.clearLine();
    this.write(text + "\n");
  }

  /** Fraction of the current case done: training is most of a case, evaluation the rest. */
  private caseFrac(): number {
    const S = this.totalSteps, f = S > 0 ? this.stepsDone / S : 0;
    return this.firstPhase ? 0.9 * f : 0.9 + 0.1 * f;
  }

  /**
   * Seconds left in the run: the weight still to do times the seconds per unit of weight seen
   * inside cases so far (NaN before any progress).
   */
  runEta(): number {
    const tw = this.totalWeight();
    const cur = this.caseIndex > 0 ? this.weight(this.caseIndex) : 0;
    const frac = this.caseIndex > 0 ? this.caseFrac() : 0;
    const doneW = this.doneWeight + cur * frac;
    const doneS = this.doneSeconds + (this.caseIndex > 0 ? (this.now() - this.caseStart) / 1000 : 0);
    if (!(doneW > 0) || !(tw > 0)) return NaN;
    return Math.max(0, tw - doneW) * (doneS / doneW);
  }

  /** Print a message line without breaking the progress line. */
  log(message: string): void {
    this.clearLine();
    this.write(message + "\n");
    if (this.tty && this.caseIndex > 0) this.draw(true);
  }

  /** End the run: clear the progress line and print the total time. */
  finish(summary = ""): void {
    this.clearLine();
    const secs = (this.now() - this.runStart) / 1000;
    this.write(
      `finished ${this.totalCases} case(s) in ${formatDuration(secs)}${summary ? `: ${summary}` : ""}\n`,
    );
  }

  private prefix(index = this.caseIndex): string {
    return `case ${index}/${this.totalCases}`;
  }

  private clearLine(): void {
    if (this.tty && this.lineShown) {
      this.write("\r\x1b[2K");
      this.lineShown = false;
    }
  }

  /** The status text (without newline or control codes). */
  statusLine(): string {
    const t = this.now();
    const elapsed = (t - this.phaseStart) / 1000;
    const S = this.totalSteps;
    const s = this.stepsDone;
    const frac = S > 0 ? s / S : 0;
    const rate = elapsed > 0 ? s / elapsed : 0;
    const eta = rate > 0 ? (S - s) / rate : NaN;
    const filled = Math.round(frac * this.barWidth);
    const bar = this.tty ? ` [${"#".repeat(filled)}${".".repeat(this.barWidth - filled)}]` : "";
    const pct = `${Math.floor(frac * 100)}%`;
    let text = `${this.prefix()} ${this.caseLabel}${bar} ${this.phase} ${s}/${S} ${pct}`;
    text += ` ${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${this.phase}/s ETA ${formatDuration(eta)}`;
    if (this.totalCases > 1) {
      const eta = this.runEta();
      if (Number.isFinite(eta)) text += ` | total ETA ${formatDuration(eta)}`;
    }
    return text;
  }

  private draw(force: boolean): void {
    const t = this.now();
    if (!force && t - this.lastDraw < this.ttyInterval) return;
    this.lastDraw = t;
    this.write("\r\x1b[2K" + this.statusLine());
    this.lineShown = true;
  }
}
