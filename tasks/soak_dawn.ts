/**
 * `deno task soak:dawn`: a paper-length SAE training run (10⁵ steps) through Dawn (npm:webgpu)
 * inside Deno, checked against the CPU backend. Background in docs/dawn.md.
 *
 * The Dawn run happens in a child process, so that a crash (a signal, a non-zero exit), a hang (no
 * progress for --stall-minutes) or the time limit is observed and reported instead of taking the
 * soak down. When the run completes:
 *  - one more training step is taken from the Dawn run's final state (weights, Adam moments, dead
 *    counters, threshold), on Dawn (in the child) and on the CPU backend (here), and the results
 *    are compared with the tolerances of the training-step test in tests/webgpu_test.ts;
 *  - the same run is repeated on the CPU backend. Two runs agree for thousands of steps but not
 *    to the last bit (float summation order), so near-tied top-K choices let them drift apart;
 *    the two trained SAEs are therefore compared on held-out data (FVE, planted atoms recovered).
 * `--gpu webgpu` runs the same soak on Deno's built-in WebGPU, for a side-by-side comparison.
 * The last line is `steps=<n> submits=<m> crashed=<yes|no>`. Exit 0: all steps ran, nothing crashed
 * and the numbers match; 1: otherwise; 2: bad options.
 */
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend } from "../src/backend/types.ts";
import { createWebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { scaledHyper } from "../src/grid/cases.ts";
import "../src/sae/mod.ts";
import { getSae } from "../src/sae/registry.ts";
import type { SaeParams } from "../src/sae/types.ts";
import { loadTrainCheckpoint, toRawParams, type TrainCheckpoint } from "../src/train/checkpoint.ts";
import type { TrainInput } from "../src/train/config.ts";
import { BatchOrder, DataSource } from "../src/train/data.ts";
import { reconstruct } from "../src/train/encode.ts";
import { type HostWeights, SaeEngine, type StepStats } from "../src/train/engine.ts";
import { lrFactor, resolveLr } from "../src/train/lr.ts";
import { plantedSparseData, recoveredFraction } from "../src/train/synthetic.ts";
import { trainSae } from "../src/train/trainer.ts";
import { defaultIo, type Io, parseOptions, runCli } from "../src/util/cli.ts";
import { check } from "../src/util/errors.ts";

export const HELP =
  `monobench soak:dawn — a long SAE training run through Dawn (npm:webgpu), checked against the CPU

Usage: deno task soak:dawn [options]

  --steps N          training steps (default 100000, the paper's length)
  --d N              input dimension (default 16)
  --width N          latents ω (default 64)
  --k N              BatchTopK K (default 4)
  --batch N          batch size (default 64)
  --seed N           seed of the data and the run (default 0)
  --gpu NAME         dawn (default) | webgpu: Deno's built-in WebGPU, for comparison
  --minutes M        stop the GPU run after M minutes (default 240)
  --stall-minutes M  count the GPU run as hung after M minutes without progress (default 10)
  --sync-every N     read the device scalars every N steps (default 500)
  --dir DIR          keep the checkpoints and logs in DIR (default: a temporary directory)
  --crash-at N       test the crash detection: the GPU child kills itself (SIGABRT) at the first
                     sync at or after step N
  -h, --help         this help

The last line is steps=<n> submits=<m> crashed=<yes|no>.
`;

const OPTIONS = {
  steps: { type: "string", default: "100000" },
  d: { type: "string", default: "16" },
  width: { type: "string", default: "64" },
  k: { type: "string", default: "4" },
  batch: { type: "string", default: "64" },
  seed: { type: "string", default: "0" },
  gpu: { type: "string", default: "dawn" },
  minutes: { type: "string", default: "240" },
  "stall-minutes": { type: "string", default: "10" },
  "sync-every": { type: "string", default: "500" },
  dir: { type: "string" },
  "crash-at": { type: "string" },
  child: { type: "boolean", default: false },
  help: { type: "boolean", short: "h", default: false },
} as const;

/** Planted atoms, samples per atom mixture, and the held-out split of the synthetic data. */
const ATOMS = 48, PER_SAMPLE = 3, N_TRAIN = 8192, N_EVAL = 2048;
/** One-step tolerances: those of "training step matches the CPU backend" in tests/webgpu_test.ts. */
export const STEP_TOL = { statsRtol: 1e-4, thrRtol: 1e-5, wAtol: 1e-5, wRtol: 1e-4 } as const;
/** Whole-run tolerance: held-out FVE of the GPU-trained SAE vs the CPU-trained one (absolute). */
export const FVE_TOL = 0.01;

export interface SoakConfig {
  /** Which WebGPU implementation trains: Dawn, or Deno's built-in one for comparison. */
  gpu: "dawn" | "webgpu";
  steps: number;
  d: number;
  width: number;
  k: number;
  batch: number;
  seed: number;
  syncEvery: number;
}

const HINT = "see deno task soak:dawn --help";

function posInt(v: string, name: string, min = 1): number {
  const n = Number(v);
  check(Number.isSafeInteger(n) && n >= min, `--${name} must be an integer >= ${min}, got "${v}"`, HINT);
  return n;
}

function posNum(v: string, name: string): number {
  const n = Number(v);
  check(Number.isFinite(n) && n > 0, `--${name} must be a positive number, got "${v}"`, HINT);
  return n;
}

/** Training input of the soak: the paper's schedule scaled to `steps` × `batch` (as the presets). */
export function soakInput(c: SoakConfig): TrainInput {
  const h = scaledHyper(c.steps, c.batch);
  return {
    variant: "batchtopk",
    d: c.d,
    width: c.width,
    k: c.k,
    batchSize: c.batch,
    steps: c.steps,
    seed: c.seed,
    lr: h.lrRule,
    warmupSteps: h.warmupSteps,
    thresholdStartStep: h.thresholdStartStep,
    thresholdBeta: h.thresholdBeta,
    deadAfterTokens: h.deadAfterTokens,
    auxkAlpha: h.auxkAlpha,
  };
}

/** The soak's data: train and held-out rows with the same planted atoms. */
export function soakData(c: SoakConfig): { train: Float32Array; evalX: Float32Array; atoms: Float32Array } {
  const p = plantedSparseData(N_TRAIN + N_EVAL, c.d, ATOMS, PER_SAMPLE, 1000 + c.seed);
  return {
    train: p.x.subarray(0, N_TRAIN * c.d),
    evalX: p.x.subarray(N_TRAIN * c.d),
    atoms: p.atoms,
  };
}

export interface StepResult {
  stats: StepStats;
  weights: HostWeights;
  threshold: number;
  counter: number[];
  /** Whether the AuxK path ran in this step. */
  auxk: boolean;
}

/**
 * One more training step from a checkpoint's full state, on `backend`: the batch the run would
 * use next, the lr of the last step, the threshold EMA and AuxK as the trainer would run them.
 */
export async function stepFrom(
  backend: Backend,
  ck: TrainCheckpoint,
  train: Float32Array,
): Promise<StepResult> {
  const { sae: cfg, train: tc } = ck.config;
  const src = DataSource.from(train, cfg.d);
  const order = new BatchOrder(src.n, tc.batchSize, tc.seed, tc.reshuffle);
  const { indices } = order.batch(ck.step);
  const x = new Float32Array(indices.length * cfg.d);
  src.gather(indices, x, ck.normFactor);
  const auxk = ck.samplesSeen + indices.length >= cfg.deadAfterTokens;
  const engine = new SaeEngine(backend, getSae(cfg.variant), cfg, ck.weights, ck.opt);
  try {
    engine.forwardBackward(x, indices.length, {
      updateThreshold: ck.step > cfg.thresholdStartStep,
      auxk,
      step: ck.step,
      steps: tc.steps,
    });
    const lr = resolveLr(tc.lr, cfg.width) * lrFactor(ck.step - 1, tc.steps, tc.warmupSteps, tc.decayStart);
    engine.optimizerStep({
      lr,
      step: ck.step + 1,
      beta1: tc.beta1,
      beta2: tc.beta2,
      eps: tc.eps,
      maxNorm: tc.gradClip,
    });
    const stats = await engine.readStats();
    const weights = await engine.readWeights();
    const opt = await engine.readOptState();
    return { stats, weights, threshold: opt.threshold, counter: Array.from(opt.counter), auxk };
  } finally {
    engine.dispose();
  }
}

/** Largest violation of |a − b| <= atol + rtol·|b| as a multiple of the allowed error (> 1: fail). */
export function closeness(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) && Number.isNaN(b[i])) continue;
    const err = Math.abs(a[i] - b[i]), allowed = atol + rtol * Math.abs(b[i]);
    if (!(err <= allowed)) worst = Math.max(worst, allowed > 0 ? err / allowed : Infinity);
    else if (allowed > 0) worst = Math.max(worst, err / allowed);
  }
  return worst;
}

/** Compare a Dawn step with the CPU step; one line per quantity, `ok` false on any failure. */
export function compareSteps(dawn: StepResult, cpu: StepResult): { ok: boolean; lines: string[] } {
  const t = STEP_TOL;
  const rows: [string, number][] = [
    ["loss", closeness([dawn.stats.loss], [cpu.stats.loss], 0, t.statsRtol)],
    ["AuxK", closeness([dawn.stats.aux], [cpu.stats.aux], 0, t.statsRtol)],
    ["grad norm²", closeness([dawn.stats.gradNormSq], [cpu.stats.gradNormSq], 0, t.statsRtol)],
    ["dead", dawn.stats.dead === cpu.stats.dead ? 0 : Infinity],
    ["threshold", closeness([dawn.threshold], [cpu.threshold], 0, t.thrRtol)],
    ["dead counters", closeness(dawn.counter, cpu.counter, 0, 0)],
  ];
  for (const n of ["Wenc", "benc", "Wdec", "bdec"] as const) {
    rows.push([n, closeness(dawn.weights[n], cpu.weights[n], t.wAtol, t.wRtol)]);
  }
  const lines = rows.map(([n, r]) =>
    `  ${n.padEnd(14)} ${r <= 1 ? "ok" : "MISMATCH"} (worst error ${
      r === Infinity ? "∞" : r.toFixed(3)
    }× the tolerance)`
  );
  return { ok: rows.every(([, r]) => r <= 1), lines };
}

/** Fraction of variance explained on `x` by `params` (reconstructed on the CPU backend). */
export async function heldOutFve(params: SaeParams, x: Float32Array): Promise<number> {
  const d = params.cfg.d, n = x.length / d;
  const xh = await reconstruct(new CpuBackend(), params, x);
  const mean = new Float64Array(d);
  for (let i = 0; i < x.length; i++) mean[i % d] += x[i] / n;
  let sse = 0, sst = 0;
  for (let i = 0; i < x.length; i++) {
    sse += (x[i] - xh[i]) ** 2;
    sst += (x[i] - mean[i % d]) ** 2;
  }
  return 1 - sse / sst;
}

function label(c: SoakConfig): string {
  return c.gpu === "dawn" ? "Dawn" : "built-in WebGPU";
}

function paramsOf(ck: TrainCheckpoint): SaeParams {
  return toRawParams(ck.config.sae, ck.weights, ck.opt.threshold, ck.normFactor);
}

const PROGRESS = "soak-progress ";
const DONE = "soak-done ";

/** Child: the GPU run itself. Prints progress lines; writes the checkpoint and the extra step. */
async function child(c: SoakConfig, dir: string, crashAt: number | null): Promise<number> {
  const be = await createWebGpuBackend(c.gpu);
  console.log(`${PROGRESS}${JSON.stringify({ step: 0, submits: 0, adapter: be.description })}`);
  const { train } = soakData(c);
  const t0 = performance.now();
  await trainSae(be, train, soakInput(c), {
    syncEvery: c.syncEvery,
    checkpointDir: join(dir, c.gpu),
    overwrite: true,
    onProgress: (p) => {
      const s = be.engine.stats;
      const ms = (performance.now() - t0) / p.step;
      const line = { step: p.step, submits: s.submits, loss: p.loss, dead: p.dead, msPerStep: ms };
      console.log(`${PROGRESS}${JSON.stringify(line)}`);
      if (crashAt !== null && p.step >= crashAt) Deno.kill(Deno.pid, "SIGABRT");
    },
  });
  const ck = await loadTrainCheckpoint(join(dir, c.gpu));
  const step = await stepFrom(be, ck, train);
  await Deno.writeTextFile(join(dir, `${c.gpu}_step.json`), JSON.stringify(step, replacer));
  console.log(`${DONE}${JSON.stringify({ steps: ck.step, submits: be.engine.stats.submits })}`);
  be.destroy();
  return 0;
}

function replacer(_k: string, v: unknown): unknown {
  return v instanceof Float32Array ? Array.from(v) : v;
}

function toStep(j: StepResult): StepResult {
  const w = j.weights as unknown as Record<string, number[]>;
  const weights = Object.fromEntries(
    ["Wenc", "benc", "Wdec", "bdec"].map((n) => [n, Float32Array.from(w[n])]),
  ) as unknown as HostWeights;
  return { ...j, weights };
}

interface ChildOutcome {
  steps: number;
  submits: number;
  crashed: boolean;
  completed: boolean;
  how: string;
}

/** Run the GPU child, following its progress; a signal, a bad exit or a stall counts as a crash. */
async function runChild(
  c: SoakConfig,
  dir: string,
  argv: string[],
  minutes: number,
  stallMinutes: number,
  io: Io,
): Promise<ChildOutcome> {
  const args = ["run", "-A", import.meta.filename!, ...argv, "--child", "--dir", dir];
  const log = await Deno.open(join(dir, `${c.gpu}.log`), { write: true, create: true, truncate: true });
  const proc = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).spawn();
  const errDone = proc.stderr.pipeTo(log.writable);
  const t0 = performance.now();
  let steps = 0, submits = 0, last = t0, completed = false, reportedAt = 0;
  const state = { killed: "" as "" | "limit" | "stall" };
  const timer = setInterval(() => {
    const now = performance.now();
    const why = now - last > stallMinutes * 60e3 ? "stall" : now - t0 > minutes * 60e3 ? "limit" : "";
    if (why && !state.killed) {
      state.killed = why;
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  }, 1000);
  let buf = "";
  for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    const lines = buf.split("\n");
    buf = lines.pop()!;
    for (const l of lines) {
      if (l.startsWith(PROGRESS)) {
        const p = JSON.parse(l.slice(PROGRESS.length));
        last = performance.now();
        steps = p.step;
        submits = p.submits;
        if (p.adapter) io.out(`${c.gpu}: ${p.adapter}`);
        if (steps >= reportedAt + Math.max(c.syncEvery, c.steps / 20) || steps === c.steps) {
          reportedAt = steps;
          io.out(
            `  step ${steps}/${c.steps} submits=${submits} loss=${p.loss.toPrecision(4)} dead=${p.dead} ` +
              `${p.msPerStep.toFixed(1)} ms/step`,
          );
        }
      } else if (l.startsWith(DONE)) {
        const p = JSON.parse(l.slice(DONE.length));
        steps = p.steps;
        submits = p.submits;
        completed = true;
      }
    }
  }
  const st = await proc.status;
  clearInterval(timer);
  await errDone.catch(() => {});
  const min = ((performance.now() - t0) / 60e3).toFixed(1);
  if (state.killed === "stall") {
    return {
      steps,
      submits,
      crashed: true,
      completed: false,
      how: `hung: no progress for ${stallMinutes} min`,
    };
  }
  if (state.killed === "limit") {
    return {
      steps,
      submits,
      crashed: false,
      completed: false,
      how: `stopped at the ${minutes}-minute limit`,
    };
  }
  if (st.signal) {
    return {
      steps,
      submits,
      crashed: true,
      completed: false,
      how: `killed by ${st.signal} after ${min} min`,
    };
  }
  // Status 2 is a MonobenchError in the child (e.g. Dawn cannot load): not a crash.
  if (st.code === 2 && steps === 0) {
    return { steps, submits, crashed: false, completed: false, how: `${label(c)} could not start` };
  }
  if (st.code !== 0 || !completed) {
    return {
      steps,
      submits,
      crashed: true,
      completed: false,
      how: `exited with status ${st.code} after ${min} min`,
    };
  }
  return { steps, submits, crashed: false, completed: true, how: `completed in ${min} min` };
}

/** The last `n` lines of the child's stderr, without Dawn's warnings (a line and its "at" lines). */
async function tail(path: string, n: number): Promise<string[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return [];
  }
  const keep: string[] = [];
  let inWarning = false;
  for (const l of text.split("\n")) {
    if (/^Warning: /.test(l)) inWarning = true;
    else if (!/^\s+at /.test(l)) inWarning = false;
    if (!inWarning && l.trim()) keep.push(l);
  }
  return keep.slice(-n);
}

export async function run(argv: string[], io: Io = defaultIo): Promise<number> {
  const { values: v } = parseOptions("soak:dawn", { args: argv, options: OPTIONS });
  if (v.help) {
    io.out(HELP);
    return 0;
  }
  check(v.gpu === "dawn" || v.gpu === "webgpu", `--gpu must be dawn or webgpu, got "${v.gpu}"`, HINT);
  const c: SoakConfig = {
    gpu: v.gpu,
    steps: posInt(v.steps, "steps"),
    d: posInt(v.d, "d"),
    width: posInt(v.width, "width"),
    k: posInt(v.k, "k"),
    batch: posInt(v.batch, "batch"),
    seed: posInt(v.seed, "seed", 0),
    syncEvery: posInt(v["sync-every"], "sync-every"),
  };
  check(c.k <= c.width, `--k (${c.k}) must not exceed --width (${c.width})`, HINT);
  const minutes = posNum(v.minutes, "minutes"), stall = posNum(v["stall-minutes"], "stall-minutes");
  const crashAt = v["crash-at"] === undefined ? null : posInt(v["crash-at"], "crash-at");
  if (v.child) return await child(c, v.dir!, crashAt);

  const dir = v.dir ?? await Deno.makeTempDir({ prefix: "monobench-soak-dawn-" });
  await Deno.mkdir(dir, { recursive: true });
  const childArgs = argv.filter((a, i) =>
    a !== "--dir" && argv[i - 1] !== "--dir" && !a.startsWith("--dir=")
  );
  io.out(
    `soak:dawn: ${label(c)}, ${c.steps} steps, BatchTopK d=${c.d} ω=${c.width} K=${c.k} batch ${c.batch}, ` +
      `limit ${minutes} min; files in ${dir}`,
  );
  const r = await runChild(c, dir, childArgs, minutes, stall, io);
  io.out(`${c.gpu} run: ${r.how}, ${r.steps} steps, ${r.submits} submits`);
  let ok = r.completed;
  if (!r.completed && !/limit/.test(r.how)) {
    for (const l of await tail(join(dir, `${c.gpu}.log`), 5)) io.out(`  | ${l}`);
  }
  if (r.completed) {
    const ck = await loadTrainCheckpoint(join(dir, c.gpu));
    const { train, evalX, atoms } = soakData(c);
    const dawnStep = toStep(JSON.parse(await Deno.readTextFile(join(dir, `${c.gpu}_step.json`))));
    const cpuStep = await stepFrom(new CpuBackend(), ck, train);
    const cmp = compareSteps(dawnStep, cpuStep);
    io.out(
      `one more step from the final state (dead ${cpuStep.stats.dead}, AuxK ${
        cpuStep.auxk ? "on" : "off"
      }), ` +
        `${label(c)} vs CPU: ${cmp.ok ? "match" : "MISMATCH"}`,
    );
    for (const l of cmp.lines) io.out(l);
    io.out("the same run on the CPU backend…");
    const t0 = performance.now();
    const cpuRun = await trainSae(new CpuBackend(), train, soakInput(c), { syncEvery: c.syncEvery });
    const cpuMin = ((performance.now() - t0) / 60e3).toFixed(1);
    const dawnParams = paramsOf(ck);
    const fD = await heldOutFve(dawnParams, evalX), fC = await heldOutFve(cpuRun.params, evalX);
    const rD = recoveredFraction(atoms, ATOMS, dawnParams.Wdec, c.width, c.d);
    const rC = recoveredFraction(atoms, ATOMS, cpuRun.params.Wdec, c.width, c.d);
    // Steps for which the two loss curves agree to 1e-4 (until near-ties flip a top-K choice).
    let agree = 0;
    for (let i = 0; i < Math.min(ck.history.length, cpuRun.history.length); i++) {
      const a = ck.history[i].loss, b = cpuRun.history[i].loss;
      if (Math.abs(a - b) > 1e-4 * Math.abs(b)) break;
      agree = ck.history[i].step;
    }
    const fveOk = Math.abs(fD - fC) <= FVE_TOL;
    io.out(`CPU run: ${cpuMin} min; loss curves agree to 1e-4 up to step ${agree}`);
    io.out(
      `held-out FVE: ${label(c)} ${fD.toFixed(4)}, CPU ${fC.toFixed(4)} (|Δ| ${
        Math.abs(fD - fC).toFixed(4)
      }, ` +
        `tolerance ${FVE_TOL}: ${fveOk ? "ok" : "MISMATCH"}); atoms recovered (cos > 0.9): ${label(c)} ` +
        `${(rD * 100).toFixed(0)} %, CPU ${(rC * 100).toFixed(0)} %`,
    );
    io.out(
      `final loss (mean of the last 1 % of syncs): ${label(c)} ${finalLoss(ck).toPrecision(4)}, CPU ` +
        `${cpuRun.finalLoss.toPrecision(4)}`,
    );
    ok = cmp.ok && fveOk;
  }
  const pass = ok && !r.crashed;
  // A temporary directory goes once everything passed; on a failure it stays for inspection.
  if (pass && v.dir === undefined) await Deno.remove(dir, { recursive: true }).catch(() => {});
  else if (!pass) io.out(`checkpoints and the ${label(c)} log are kept in ${dir}`);
  io.out(`steps=${r.steps} submits=${r.submits} crashed=${r.crashed ? "yes" : "no"}`);
  return pass ? 0 : 1;
}

function finalLoss(ck: TrainCheckpoint): number {
  const steps = ck.config.train.steps;
  const tail = ck.history.filter((h) => h.step > steps - Math.max(1, Math.ceil(steps / 100)));
  const use = tail.length ? tail : ck.history.slice(-1);
  return use.reduce((a, h) => a + h.loss, 0) / use.length;
}

export function main(argv: string[], io: Io = defaultIo): Promise<number> {
  return runCli(() => run(argv, io), io);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
