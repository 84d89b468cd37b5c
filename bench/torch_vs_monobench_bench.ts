/**
 * PyTorch vs monobench: the same BatchTopK SAE (paper.md §1, K = 20) trained on the same data
 * file, same d, ε, batch, one untimed warm-up step (step 0: geometric-median b_dec, first
 * allocations) and the same number of timed steps; both sides report seconds per step.
 *
 *   deno bench -A bench/torch_vs_monobench_bench.ts              Deno.bench rows per monobench
 *                                                                backend + a summary table
 *   deno bench -A bench/torch_vs_monobench_bench.ts -- --full    more configs, adds "cpu"
 *   deno run -A bench/torch_vs_monobench_bench.ts --quick        the table only, no deno bench
 *
 * Options (after `--` under deno bench): --quick | --full, --backends blas,webgpu,cpu,
 * --steps N (timed steps per run), --auxk (dead latents from step 1, so AuxK runs on both
 * sides), --python PATH. Environment: MONOBENCH_PYTHON (python with torch + numpy).
 *
 * - PyTorch: bench/torch_ref.py, a dense trainer following the reference BatchTopKTrainer, run
 *   once per config as a subprocess (in the untimed part of the first bench call of that config);
 *   its JSON line gives per-step times.
 * - monobench: `trainSae` with syncEvery 1; the timed region (b.start/b.end) runs from the sync
 *   after step 0 to the sync after the last step, so init, geometric median and the final
 *   weight read-back are excluded, as on the PyTorch side. Deno calls every bench function
 *   about three times (calibration, warm-up, measured run); the summary uses the median over
 *   all timed steps of all calls.
 * - ratio = PyTorch s/step ÷ monobench s/step (> 1: monobench faster).
 * - Data: n = 8192 synthetic rows (sparse non-negative mixture of 512 directions, a positive
 *   offset, log-normal row scales, noise, leaky clamp at 0), written once to a temp file that
 *   both sides read.
 * Missing python/torch, OpenBLAS or WebGPU prints a skip line instead of failing.
 */
import { parseArgs } from "node:util";
import "../src/sae/mod.ts";
import { trainSae } from "../src/train/mod.ts";
import { selectBackend } from "../src/backend/select.ts";
import { BlasBackend, openBlas } from "../src/backend/blas.ts";
import type { Backend } from "../src/backend/types.ts";
import { Rng } from "../src/util/rng.ts";

export const N_ROWS = 8192;
export const K = 20;
/** Untimed steps before the timed ones (both sides). */
export const WARMUP_STEPS = 1;

export interface BenchCase {
  d: number;
  expansion: number;
  batch: number;
}

export type BackendKind = "blas" | "webgpu" | "cpu";
const BACKEND_KINDS: readonly BackendKind[] = ["blas", "webgpu", "cpu"];

export function caseLabel(c: BenchCase): string {
  return `d=${c.d} ε=${c.expansion} ω=${c.d * c.expansion} B=${c.batch}`;
}

/**
 * Synthetic "non-negative-ish" activations [n, d]: each row is a sparse non-negative combination
 * of 12 of 512 random unit directions (skewed frequencies, exponential coefficients) plus a
 * positive offset, times a log-normal row scale, plus noise; negative values are shrunk ×0.1.
 */
export function syntheticActivations(n: number, d: number, seed = 7): Float32Array {
  const rng = new Rng(seed);
  const atoms = 512, active = 12;
  const A = rng.normals(atoms * d, 1 / Math.sqrt(d));
  const offset = rng.uniforms(d, 0, 0.3);
  const x = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    const row = x.subarray(r * d, (r + 1) * d);
    row.set(offset);
    for (let t = 0; t < active; t++) {
      const j = Math.floor(atoms * rng.next() ** 2);
      const c = -Math.log(1 - rng.next());
      const a = A.subarray(j * d, (j + 1) * d);
      for (let i = 0; i < d; i++) row[i] += c * a[i];
    }
    const s = Math.exp(0.3 * rng.normal());
    for (let i = 0; i < d; i++) {
      const v = s * row[i] + 0.05 * rng.normal();
      row[i] = v < 0 ? 0.1 * v : v;
    }
  }
  return x;
}

function median(a: number[]): number {
  if (!a.length) return NaN;
  const s = [...a].sort((p, q) => p - q), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ---- PyTorch side -----------------------------------------------------------------------------

export interface TorchResult {
  torch: string;
  threads: number;
  openblas_core?: string;
  openblas_threads?: number;
  openblas_coretype_env: string | null;
  step_seconds: number[];
  median_sec_per_step: number;
  /** Total loss (reconstruction + α·AuxK) of each timed step. */
  losses: number[];
  /** Reconstruction loss of each timed step. */
  recon_losses?: number[];
  dead: number;
}

async function canImportTorch(python: string): Promise<boolean> {
  try {
    const out = await new Deno.Command(python, {
      args: ["-c", "import torch, numpy"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  } catch {
    return false;
  }
}

let pythonPromise: Promise<string | null> | null = null;

/** A python with torch and numpy: --python, else MONOBENCH_PYTHON, else /usr/bin/python3 or python3. */
export function findPython(explicit?: string): Promise<string | null> {
  pythonPromise ??= (async () => {
    let env: string | undefined;
    try {
      env = Deno.env.get("MONOBENCH_PYTHON");
    } catch { /* no env permission */ }
    // An explicitly named python is the only candidate (so a skip can be forced/tested).
    const given = explicit ?? env;
    for (const p of given ? [given] : ["/usr/bin/python3", "python3"]) {
      if (p && await canImportTorch(p)) return p;
    }
    return null;
  })();
  return pythonPromise;
}

/** Run bench/torch_ref.py on the data file; a string is the reason it could not run. */
export async function runTorch(
  python: string,
  file: string,
  c: BenchCase,
  steps: number,
  deadAfter: number,
): Promise<TorchResult | string> {
  const script = new URL("./torch_ref.py", import.meta.url).pathname;
  const args = [
    script,
    file,
    String(N_ROWS),
    String(c.d),
    ...["--expansion", String(c.expansion), "--k", String(K), "--batch", String(c.batch)],
    ...["--steps", String(steps), "--warmup", String(WARMUP_STEPS), "--threshold-start", "0"],
    ...["--dead-after", String(deadAfter)],
  ];
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    return `could not start ${python}: ${e instanceof Error ? e.message : e}`;
  }
  const stdout = new TextDecoder().decode(out.stdout);
  const line = stdout.split("\n").filter((l) => l.startsWith("{")).pop();
  if (!out.success || !line) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    return `torch_ref.py failed (exit ${out.code}): ${err || stdout.trim().slice(-200)}`;
  }
  try {
    return JSON.parse(line) as TorchResult;
  } catch {
    return `torch_ref.py printed malformed JSON: ${line.slice(0, 200)}`;
  }
}

// ---- monobench side ---------------------------------------------------------------------------

const backends = new Map<BackendKind, Promise<Backend | string>>();

/** The backend, or a string saying why it is unavailable (never throws). */
export function getBackend(kind: BackendKind): Promise<Backend | string> {
  let p = backends.get(kind);
  if (!p) {
    p = (async (): Promise<Backend | string> => {
      try {
        if (kind === "blas") {
          return BlasBackend.tryCreate() ??
            "OpenBLAS unavailable (needs --allow-ffi and libopenblas0-pthread, or MONOBENCH_BLAS)";
        }
        return await selectBackend(kind);
      } catch (e) {
        return `${kind} backend unavailable: ${e instanceof Error ? e.message.split("\n")[0] : e}`;
      }
    })();
    backends.set(kind, p);
  }
  return p;
}

export interface MonoRun {
  stepSeconds: number[];
  /** Reconstruction loss of the last step. */
  loss: number;
  /** Dead latents after the last step. */
  dead: number;
}

/**
 * Train WARMUP_STEPS + steps updates with `trainSae`; times the steps after the warm-up (between
 * the per-step syncs). `b`, if given, is started/ended around the timed steps.
 */
export async function runMonobench(
  backend: Backend,
  x: Float32Array,
  c: BenchCase,
  steps: number,
  deadAfter: number,
  b?: Deno.BenchContext,
): Promise<MonoRun> {
  const stepSeconds: number[] = [];
  let last = 0, loss = NaN, dead = 0;
  await trainSae(backend, x, {
    variant: "batchtopk",
    d: c.d,
    expansion: c.expansion,
    k: K,
    batchSize: c.batch,
    steps: WARMUP_STEPS + steps,
    warmupSteps: 0,
    thresholdStartStep: 0,
    deadAfterTokens: deadAfter,
    seed: 0,
  }, {
    syncEvery: 1,
    onProgress: (p) => {
      const now = performance.now();
      if (p.step > WARMUP_STEPS) stepSeconds.push((now - last) / 1000);
      if (p.step === WARMUP_STEPS) b?.start();
      if (p.step === WARMUP_STEPS + steps) {
        b?.end();
        loss = p.loss;
        dead = p.dead;
      }
      last = performance.now();
    },
  });
  return { stepSeconds, loss, dead };
}

// ---- the comparison ---------------------------------------------------------------------------

export interface Settings {
  cases: BenchCase[];
  backends: BackendKind[];
  /** Timed monobench steps per run (per Deno.bench call under deno bench). */
  steps: number;
  /** Timed PyTorch steps (its one run). */
  torchSteps: number;
  auxk: boolean;
  python?: string;
  /** Label of the preset, for the report. */
  preset: string;
}

/**
 * Presets. Script mode: --quick (ε 4/16 at B 4096, 2 timed steps), default (+ B 1024, 3 steps),
 * --full (+ d 1024 and the cpu backend). Under deno bench the same cases as --quick (default) or
 * --full, with 1 timed monobench step per Deno.bench call (Deno calls each bench ~3×, so that is
 * ~3 timed steps) and 3 timed PyTorch steps.
 */
export function parseSettings(args: string[], benchMode: boolean): Settings {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      full: { type: "boolean", default: false },
      backends: { type: "string" },
      steps: { type: "string" },
      auxk: { type: "boolean", default: false },
      python: { type: "string" },
    },
    strict: true,
  });
  if (values.quick && values.full) throw new Error("--quick and --full exclude each other");
  const c = (d: number, expansion: number, batch: number): BenchCase => ({ d, expansion, batch });
  const preset = values.full ? "full" : values.quick || benchMode ? "quick" : "default";
  const cases = [c(768, 4, 4096), c(768, 16, 4096)];
  if (preset !== "quick") cases.push(c(768, 4, 1024), c(768, 16, 1024));
  if (preset === "full") cases.push(c(1024, 4, 4096), c(1024, 16, 4096));
  const names = (values.backends ?? (preset === "full" ? "blas,webgpu,cpu" : "blas,webgpu")).split(",");
  for (const n of names) {
    if (!BACKEND_KINDS.includes(n as BackendKind)) {
      throw new Error(`unknown backend "${n}" (choose from ${BACKEND_KINDS.join(", ")})`);
    }
  }
  const dflt = benchMode ? 1 : preset === "quick" ? 2 : 3;
  const steps = Number(values.steps ?? dflt);
  if (!Number.isSafeInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer`);
  return {
    cases,
    backends: names as BackendKind[],
    steps,
    torchSteps: benchMode ? Math.max(3, steps) : steps,
    auxk: values.auxk,
    python: values.python,
    preset: benchMode ? `deno bench, ${preset}` : preset,
  };
}

interface CaseState {
  torch: Promise<TorchResult | string> | null;
  /** The PyTorch result once it has arrived (so the summary can be printed synchronously). */
  torchDone: TorchResult | string | null;
  mono: Map<BackendKind, { seconds: number[]; loss: number; dead: number } | string>;
}

/** Shared state of one comparison run: the data files, per-case results, the summary table. */
export class Comparison {
  private dir: string | null = null;
  private readonly data = new Map<number, { file: string; x: Float32Array }>();
  private readonly state = new Map<string, CaseState>();
  private printed = false;

  constructor(readonly settings: Settings, readonly log: (line: string) => void = console.log) {}

  /** Samples without firing after which a latent counts as dead (AuxK active with --auxk). */
  deadAfter(c: BenchCase): number {
    return this.settings.auxk ? c.batch : 10_000_000;
  }

  /** The data of row length c.d, generated and written to the temp dir on first use. */
  caseData(c: BenchCase): { file: string; x: Float32Array } {
    let e = this.data.get(c.d);
    if (!e) {
      this.dir ??= Deno.makeTempDirSync({ prefix: "monobench-tvm-" });
      const x = syntheticActivations(N_ROWS, c.d);
      const file = `${this.dir}/acts_${N_ROWS}x${c.d}.f32`;
      Deno.writeFileSync(file, new Uint8Array(x.buffer, x.byteOffset, x.byteLength));
      e = { file, x };
      this.data.set(c.d, e);
    }
    return e;
  }

  private caseState(c: BenchCase): CaseState {
    const key = caseLabel(c);
    let s = this.state.get(key);
    if (!s) {
      s = { torch: null, torchDone: null, mono: new Map() };
      this.state.set(key, s);
    }
    return s;
  }

  /** Run the PyTorch reference for `c` once (memoised; never rejects). */
  torch(c: BenchCase): Promise<TorchResult | string> {
    const s = this.caseState(c);
    s.torch ??= (async () => {
      const py = await findPython(this.settings.python);
      const r = py
        ? await runTorch(py, this.caseData(c).file, c, this.settings.torchSteps, this.deadAfter(c))
        : `no python with torch + numpy found (${
          this.settings.python ?? "MONOBENCH_PYTHON or /usr/bin/python3, python3"
        })`;
      if (typeof r === "string") this.log(`pytorch ${caseLabel(c)}: skipped: ${r}`);
      else {
        this.log(
          `pytorch ${caseLabel(c)}: ${r.median_sec_per_step.toFixed(3)} s/step (median of ` +
            `${r.step_seconds.length}; torch ${r.torch}, ${r.threads} torch thread(s), OpenBLAS ` +
            `${r.openblas_core ?? "?"} × ${r.openblas_threads ?? "?"} threads)`,
        );
      }
      s.torchDone = r;
      return r;
    })();
    return s.torch;
  }

  /** One monobench run of `c` on `kind`; records the step times (never throws). */
  async mono(c: BenchCase, kind: BackendKind, b?: Deno.BenchContext): Promise<void> {
    const s = this.caseState(c);
    const prev = s.mono.get(kind);
    if (typeof prev === "string") return;
    const be = await getBackend(kind);
    if (typeof be === "string") {
      s.mono.set(kind, be);
      this.log(`${kind} ${caseLabel(c)}: skipped: ${be}`);
      return;
    }
    try {
      const r = await runMonobench(be, this.caseData(c).x, c, this.settings.steps, this.deadAfter(c), b);
      const acc = prev ?? { seconds: [], loss: NaN, dead: 0 };
      acc.seconds.push(...r.stepSeconds);
      acc.loss = r.loss;
      acc.dead = r.dead;
      s.mono.set(kind, acc);
    } catch (e) {
      const why = `failed: ${e instanceof Error ? e.message.split("\n")[0] : e}`;
      s.mono.set(kind, why);
      this.log(`${kind} ${caseLabel(c)}: skipped: ${why}`);
    }
  }

  /** Everything for one case, in order (script mode). */
  async runCase(c: BenchCase): Promise<void> {
    await this.torch(c);
    for (const kind of this.settings.backends) await this.mono(c, kind);
  }

  /** The summary table (markdown). */
  table(): string {
    const kinds = this.settings.backends;
    const head = [
      "config",
      "PyTorch s/step",
      ...kinds.flatMap((k) => [`${k} s/step`, `ratio ${k}`]),
      `recon loss@${WARMUP_STEPS + this.settings.steps} PyTorch / ${kinds[0]}`,
      ...(this.settings.auxk ? [`dead PyTorch / ${kinds[0]}`] : []),
    ];
    const rows: string[][] = [];
    for (const c of this.settings.cases) {
      const s = this.state.get(caseLabel(c));
      if (!s) continue;
      const torch = typeof s.torchDone === "string" ? null : s.torchDone;
      const tSec = torch ? torch.median_sec_per_step : NaN;
      const row = [caseLabel(c), torch ? tSec.toFixed(3) : s.torchDone ? "skipped" : "not run"];
      for (const k of kinds) {
        const m = s.mono.get(k);
        if (!m || typeof m === "string") {
          row.push(m ? "skipped" : "not run", "–");
          continue;
        }
        const sec = median(m.seconds);
        row.push(sec.toFixed(3), torch ? `${(tSec / sec).toFixed(2)}×` : "–");
      }
      // Loss of the same step on both sides (PyTorch may run more timed steps than one monobench run).
      const tLosses = torch ? torch.recon_losses ?? torch.losses : [];
      const tl = tLosses[Math.min(this.settings.steps, tLosses.length) - 1] ?? NaN;
      const m0 = s.mono.get(kinds[0]);
      const mono0 = m0 && typeof m0 !== "string" ? m0 : null;
      const num = (v: number | undefined, digits: number) =>
        v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : "–";
      row.push(`${num(tl, 4)} / ${num(mono0?.loss, 4)}`);
      if (this.settings.auxk) row.push(`${num(torch?.dead, 0)} / ${num(mono0?.dead, 0)}`);
      rows.push(row);
    }
    const fmt = (r: string[]) => `| ${r.join(" | ")} |`;
    return [fmt(head), fmt(head.map(() => "---")), ...rows.map(fmt)].join("\n");
  }

  /** Environment lines for the report. */
  environment(): string[] {
    let cpu = "?", coretype: string | undefined;
    try {
      cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
    } catch { /* not Linux or no read permission */ }
    try {
      coretype = Deno.env.get("OPENBLAS_CORETYPE");
    } catch { /* no env permission */ }
    const load = Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
    const ob = openBlas();
    const lines = [
      `machine: ${cpu}, ${navigator.hardwareConcurrency} logical cores, load average ${load} ` +
      `(shared machine: numbers are noisy)`,
      `OPENBLAS_CORETYPE=${coretype ?? "(unset)"}; monobench blas: ${
        ob ? `OpenBLAS ${ob.core}, ${ob.threads} threads` : "unavailable"
      }`,
    ];
    const torch = [...this.state.values()].map((s) => s.torchDone).find((r) => r && typeof r !== "string");
    if (torch && typeof torch !== "string") {
      lines.push(
        `PyTorch ${torch.torch}: ${torch.threads} torch thread(s), OpenBLAS ${
          torch.openblas_core ?? "?"
        } × ` +
          `${torch.openblas_threads ?? "?"} threads (OPENBLAS_CORETYPE in python: ${
            torch.openblas_coretype_env ?? "(unset)"
          })`,
      );
    }
    for (const [k, d] of this.descriptions) lines.push(`${k}: ${d}`);
    const { steps, torchSteps, auxk, preset } = this.settings;
    lines.push(
      `preset ${preset}: n=${N_ROWS} rows, K=${K}; ${WARMUP_STEPS} warm-up step + ${steps} timed ` +
        `monobench / ${torchSteps} timed PyTorch steps per run; s/step = median ` +
        `over timed steps; ratio = PyTorch/monobench (>1: monobench faster); AuxK ${
          auxk ? "active (dead = no firing in the last batch)" : "inactive (no latent can be dead yet)"
        }`,
    );
    return lines;
  }

  private readonly descriptions = new Map<BackendKind, string>();

  /** Remember the backend descriptions (async: backends are created asynchronously). */
  async describeBackends(): Promise<void> {
    for (const k of this.settings.backends) {
      if (!backends.has(k)) continue;
      const be = await getBackend(k);
      this.descriptions.set(k, typeof be === "string" ? be : be.description);
    }
  }

  /** Print the environment and the table once (synchronous: usable from an unload handler). */
  summary(): void {
    if (this.printed || this.state.size === 0) return;
    this.printed = true;
    this.log(["", ...this.environment(), "", this.table(), ""].join("\n"));
  }

  /** Remove the temp data and release the backends (synchronous). */
  cleanup(): void {
    if (this.dir) {
      try {
        Deno.removeSync(this.dir, { recursive: true });
      } catch { /* already gone */ }
      this.dir = null;
    }
    for (const k of [...backends.keys()]) {
      void backends.get(k)!.then((be) => typeof be === "string" || be.destroy());
    }
    backends.clear();
  }
}

// ---- entry points -----------------------------------------------------------------------------

if (import.meta.main) {
  let settings: Settings;
  try {
    settings = parseSettings(Deno.args, false);
  } catch (e) {
    console.error(`torch_vs_monobench: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
  const cmp = new Comparison(settings);
  try {
    for (const c of cmp.settings.cases) await cmp.runCase(c);
    await cmp.describeBackends();
    cmp.summary();
  } finally {
    cmp.cleanup();
  }
} else {
  const cmp = new Comparison(parseSettings(Deno.args, true));
  for (const c of cmp.settings.cases) {
    for (const kind of cmp.settings.backends) {
      Deno.bench({
        name: `monobench ${kind} ${caseLabel(c)} (${cmp.settings.steps} step${
          cmp.settings.steps > 1 ? "s" : ""
        }/iter)`,
        group: caseLabel(c),
        baseline: kind === "blas",
        n: 1,
        warmup: 0,
        async fn(b) {
          await cmp.torch(c); // once per config, outside the timed region
          await cmp.mono(c, kind, b);
          await cmp.describeBackends();
        },
      });
    }
  }
  Deno.bench({
    name: "summary (prints the PyTorch vs monobench table)",
    // Ungrouped benches run before all groups: the summary needs a group of its own to run last.
    group: "summary",
    n: 1,
    warmup: 0,
    fn() {
      cmp.summary();
    },
  });
  globalThis.addEventListener("unload", () => {
    cmp.summary(); // when --filter skipped the summary bench
    cmp.cleanup();
  });
}
