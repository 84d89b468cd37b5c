/**
 * Progress on stderr (never stdout): on a terminal a single line redrawn with `\r` showing
 * "case i/n" and "step s/S" with a bar, rate and ETAs; otherwise (not a TTY, NO_COLOR or CI set)
 * plain lines printed at most every `plainIntervalMs` plus one at the start and end of each case.
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

  /** Start a run of `totalCases` cases; optional relative cost weights improve the overall ETA. */
  start(totalCases: number, weights?: number[]): void {
    this.totalCases = totalCases;
    this.weights = weights && weights.length === totalCases ? weights.map((w) => Math.max(w, 0)) : [];
    this.runStart = this.now();
    this.doneWeight = 0;
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
    this.caseStart = this.now();
    this.phaseStart = this.now();
    this.lastDraw = this.now();
    if (!this.tty) this.write(`${this.prefix()} ${label}: ${phase} 0/${this.totalSteps}\n`);
    else this.draw(true);
  }

  /** Switch the current case to another phase (e.g. "eval") with its own step count. */
  setPhase(phase: string, totalSteps: number): void {
    this.phase = phase;
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
    if (this.caseIndex > 0) this.doneWeight += this.weight(this.caseIndex);
    const secs = (this.now() - this.caseStart) / 1000;
    const text = `${this.prefix()} ${this.caseLabel} done in ${formatDuration(secs)}${
      summary ? `: ${summary}` : ""
    }`;
    this.clearLine();
    this.write(text + "\n");
    this.caseIndex = 0;
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

  private prefix(): string {
    return `case ${this.caseIndex}/${this.totalCases}`;
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
    const tw = this.totalWeight();
    if (tw > 0 && this.totalCases > 1) {
      const runFrac = (this.doneWeight + (this.caseIndex > 0 ? this.weight(this.caseIndex) * frac : 0)) / tw;
      const runElapsed = (t - this.runStart) / 1000;
      if (runFrac > 0) text += ` | total ETA ${formatDuration(runElapsed * (1 - runFrac) / runFrac)}`;
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
