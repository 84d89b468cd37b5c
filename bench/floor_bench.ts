/**
 * `deno task bench:floor`: how close monobench's CPU training step is to its floor, and how it
 * compares with PyTorch, in one run. BatchTopK SAE, d = 768, B = 4096, K = 20, ε = 4 and 16.
 *
 * Measured, with equal pinned thread counts everywhere (printed):
 *   gemm:<lib>    one encoder GEMM [B×d]·[d×ω] with each GEMM available here: MLAS from
 *                 onnxruntime-node; OpenBLAS when MONOBENCH_BLAS or the system library loads;
 *                 the WebAssembly SIMD GEMM; the multi-threaded TypeScript encoder (on B/512
 *                 rows, scaled); PyTorch's torch.mm (information only). The floor is the fastest
 *                 monobench one.
 *   monobench     one cpu-mt training step (forward, backward, Adam), synced; its process CPU
 *                 time is printed too (wall ≫ CPU / threads means the machine was busy).
 *   torch dense   the dense reference step (bench/torch_floor.py `dense`, six GEMMs).
 *   torch sparse  the sparse-decoder step (embedding_bag over the active latents, as SAELens and
 *                 sparsify do).
 * Rounds interleave every measurement; min and median per row. The last line is
 *   floor_ratio=<monobench / floor> torch_dense_ratio=<dense / monobench> torch_sparse_ratio=<sparse / monobench>
 * at ε = 16 (medians).
 *
 * Options: --rounds N (5), --eps 4,16, --threads T (MONOBENCH_THREADS or the CPU count),
 * --gemm auto|openblas|mlas|wasm (monobench's GEMM, default auto: the fastest library here),
 * --python PATH (MONOBENCH_PYTHON or /usr/bin/python3), --no-torch, --torch-blas LIB. For
 * PyTorch on OpenBLAS (Debian's torch otherwise runs the reference BLAS), point MONOBENCH_BLAS
 * (monobench and PyTorch) or --torch-blas (PyTorch only) at libopenblas.so.0: its folder goes on
 * the PyTorch process's LD_LIBRARY_PATH.
 */
import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { CpuMtBackend, type GemmChoice, gemmProvider } from "../src/backend/mt.ts";
import { f32 } from "../src/backend/cpu.ts";
import { defaultThreads } from "../src/backend/pool.ts";
import type { GemmProvider } from "../src/backend/blas.ts";
import { getSae, resolveSaeConfig } from "../src/sae/mod.ts";
import { SaeEngine } from "../src/train/engine.ts";
import { Rng } from "../src/util/rng.ts";

const D = 768, BATCH = 4096, K = 20, N_ROWS = 2 * BATCH;

/** This process's CPU time (user + system) in seconds, from /proc (NaN where unavailable). */
function cpuSeconds(): number {
  try {
    const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

async function loadAverage(): Promise<string> {
  const l = await Deno.readTextFile("/proc/loadavg").catch(() => "? ? ?");
  return l.split(" ").slice(0, 3).join(" ");
}

function stats(xs: number[]): { min: number; median: number } {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return { min: s[0], median: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2 };
}

/** Non-negative-ish synthetic activations: sparse mixtures of 512 directions + offset + noise. */
function syntheticData(rng: Rng): Float32Array {
  const dirs = rng.normals(512 * D, 1 / Math.sqrt(D));
  const out = new Float32Array(N_ROWS * D);
  for (let r = 0; r < N_ROWS; r++) {
    const o = r * D, scale = Math.exp(0.3 * rng.normal());
    for (let t = 0; t < 12; t++) {
      const j = rng.int(512), a = rng.next() * 2;
      for (let i = 0; i < D; i++) out[o + i] += a * dirs[j * D + i];
    }
    for (let i = 0; i < D; i++) {
      let v = scale * (out[o + i] + 0.05) + 0.02 * rng.normal();
      if (v < 0) v *= 0.1;
      out[o + i] = v;
    }
  }
  let sq = 0;
  for (let i = 0; i < out.length; i++) sq += out[i] * out[i];
  const f = Math.sqrt(sq / N_ROWS);
  for (let i = 0; i < out.length; i++) out[i] /= f;
  return out;
}

class TorchServer {
  private readonly proc: Deno.ChildProcess;
  private readonly lines: AsyncIterator<string>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(python: string, file: string, eps: number, threads: number, torchBlas: string | undefined) {
    const env: Record<string, string> = {
      OMP_NUM_THREADS: String(threads),
      OPENBLAS_NUM_THREADS: String(threads),
      MKL_NUM_THREADS: String(threads),
    };
    const blas = torchBlas ?? Deno.env.get("MONOBENCH_BLAS");
    if (blas) env.LD_LIBRARY_PATH = [dirname(blas), Deno.env.get("LD_LIBRARY_PATH") ?? ""].join(":");
    const script = new URL("./torch_floor.py", import.meta.url).pathname;
    this.proc = new Deno.Command(python, {
      args: [
        script,
        file,
        String(N_ROWS),
        String(D),
        "--expansion",
        String(eps),
        "--k",
        String(K),
        "--batch",
        String(BATCH),
        "--threads",
        String(threads),
      ],
      env,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.writer = this.proc.stdin.getWriter();
    this.lines = this.proc.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines())
      [Symbol.asyncIterator]();
  }

  async ask(cmd: string): Promise<Record<string, unknown>> {
    await this.writer.write(new TextEncoder().encode(cmd + "\n"));
    const r = await this.lines.next();
    if (r.done) throw new Error(`PyTorch process ended (command ${cmd})`);
    const out = JSON.parse(r.value);
    if (out.error) throw new Error(out.error);
    return out;
  }

  async close(): Promise<void> {
    try {
      await this.writer.write(new TextEncoder().encode("quit\n"));
      await this.writer.close();
    } catch { /* already gone */ }
    await this.proc.status;
  }
}

function splitLines(): TransformStream<string, string> {
  let buf = "";
  return new TransformStream({
    transform(chunk, ctl) {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        ctl.enqueue(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    },
  });
}

function timeGemm(
  p: GemmProvider,
  rows: number,
  w: number,
  x: Float32Array,
  W: Float32Array,
  C: Float32Array,
): number {
  const t0 = performance.now();
  p.sgemm(false, true, rows, w, D, x, D, W, D, 0, C, w);
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "5" },
      eps: { type: "string", default: "4,16" },
      threads: { type: "string" },
      python: { type: "string" },
      "no-torch": { type: "boolean", default: false },
      gemm: { type: "string", default: "auto" },
      "torch-blas": { type: "string" },
    },
  });
  const rounds = Number(values.rounds);
  const epss = values.eps!.split(",").map(Number);
  const threads = values.threads ? Number(values.threads) : defaultThreads();
  if (!(rounds >= 1) || epss.some((e) => !(e >= 1)) || !(threads >= 1)) {
    console.error("monobench: bench:floor: --rounds, --eps and --threads must be positive numbers");
    Deno.exit(2);
  }
  const python = values.python ?? Deno.env.get("MONOBENCH_PYTHON") ?? "/usr/bin/python3";
  const gemmChoice = values.gemm as GemmChoice;
  if (!["auto", "openblas", "mlas", "wasm"].includes(gemmChoice)) {
    console.error("monobench: bench:floor: --gemm must be auto, openblas, mlas or wasm");
    Deno.exit(2);
  }

  const rng = new Rng(1);
  const data = syntheticData(rng);
  const dir = await Deno.makeTempDir({ prefix: "monobench-floor-" });
  const file = join(dir, "x.f32");
  await Deno.writeFile(file, new Uint8Array(data.buffer));

  let be: CpuMtBackend;
  try {
    be = await CpuMtBackend.create({ threads, gemm: gemmChoice });
  } catch (e) {
    console.error(`monobench: bench:floor: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
  const providers: GemmProvider[] = [];
  for (const c of ["openblas", "mlas"] as const) {
    try {
      const p = gemmProvider(c, threads);
      if (p.kind === c) providers.push(p);
    } catch { /* not available here */ }
  }
  // The WebAssembly SIMD GEMM (what cpu-mt uses without FFI or a GEMM library).
  const wasmBe = await CpuMtBackend.create({ threads, gemm: "wasm" }).catch(() => null);
  if (wasmBe) providers.push(wasmBe.gemmProvider);
  console.log(
    `threads: ${threads} everywhere (monobench workers + GEMM library, torch.set_num_threads, OMP/OPENBLAS_NUM_THREADS)`,
  );
  console.log(`monobench backend: ${be.description}`);
  // Plain TypeScript candidate: the cpu-mt encoder without a GEMM library, on B/512 rows (scaled).
  const tsBe = await CpuMtBackend.create({ threads, gemm: "ts" });
  console.log(
    `GEMM candidates: ${providers.map((p) => p.description).join("; ")}; TypeScript (${threads} threads)`,
  );
  console.log(`load average (1, 5, 15 min): ${await loadAverage()}`);

  const summary: Record<number, Record<string, number>> = {};
  for (const eps of epss) {
    const w = eps * D;
    let torch: TorchServer | null = null;
    if (!values["no-torch"]) {
      try {
        torch = new TorchServer(python, file, eps, threads, values["torch-blas"]);
        const info = await torch.ask("info");
        console.log(`PyTorch: ${JSON.stringify(info)}`);
      } catch (e) {
        console.log(`skipped PyTorch: ${e instanceof Error ? e.message : e}`);
        torch = null;
      }
    }
    // monobench engine on the same data (threshold EMA every step, like the PyTorch side).
    const v = getSae("batchtopk");
    const cfg = resolveSaeConfig(v, { variant: "batchtopk", d: D, width: w, k: K, thresholdStartStep: 0 });
    const Wd = rng.normals(w * D, 1 / Math.sqrt(D));
    const eng = new SaeEngine(be, v, cfg, {
      Wenc: Wd,
      benc: new Float32Array(w),
      Wdec: Wd,
      bdec: new Float32Array(D),
    });
    let stepNo = 0;
    const cpuTimes: number[] = [];
    const mbStep = async () => {
      const off = (stepNo % 2) * BATCH * D;
      const c0 = cpuSeconds(), t0 = performance.now();
      eng.forwardBackward(data.subarray(off, off + BATCH * D), BATCH, { updateThreshold: true, auxk: false });
      eng.optimizerStep({ lr: 1e-4, step: ++stepNo, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
      await be.sync();
      const wall = (performance.now() - t0) / 1000;
      cpuTimes.push(cpuSeconds() - c0);
      return wall;
    };
    // GEMM operands in the WebAssembly memory, so that no candidate copies them.
    const opBe = wasmBe ?? be;
    const xt = opBe.tensor(data.subarray(0, BATCH * D), [BATCH, D]), Wt = opBe.tensor(Wd, [w, D]);
    const Ct = opBe.zeros([BATCH, w]);
    const x = f32(xt), W = f32(Wt), C = f32(Ct);
    // Warm-up: first allocations, sessions, JIT.
    await mbStep();
    for (const p of providers) timeGemm(p, BATCH, w, x, W, C);
    const rowsTs = BATCH / 512;
    const tsArgs = [
      tsBe.tensor(data.subarray(0, rowsTs * D), [rowsTs, D]),
      tsBe.tensor(Wd, [w, D]),
      tsBe.zeros([w]),
      tsBe.zeros([D]),
      tsBe.zeros([rowsTs, w]),
    ] as const;
    const timeTs = () => {
      const t0 = performance.now();
      tsBe.encode(...tsArgs);
      return (512 * (performance.now() - t0)) / 1000;
    };
    timeTs();
    if (torch) {
      await torch.ask("dense");
      await torch.ask("sparse");
      await torch.ask("gemm");
    }
    const t: Record<string, number[]> = {};
    const add = (k: string, s: number) => (t[k] ??= []).push(s);
    for (let r = 0; r < rounds; r++) {
      for (const p of providers) {
        add(`gemm:${p.kind}`, timeGemm(p, BATCH, w, x, W, C));
      }
      add("gemm:ts", timeTs());
      add("monobench", await mbStep());
      if (torch) {
        add("torch dense", (await torch.ask("dense")).seconds as number);
        add("torch sparse", (await torch.ask("sparse")).seconds as number);
        add("gemm:torch", (await torch.ask("gemm")).seconds as number);
      }
    }
    eng.dispose();
    for (const t of [xt, Wt, Ct]) opBe.dispose(t);
    await torch?.close();
    const flop = 2 * BATCH * D * w;
    const cpu = stats(cpuTimes.slice(1));
    console.log(`\nε=${eps} (ω=${w}, B=${BATCH}, d=${D}, K=${K}), ${rounds} interleaved rounds:`);
    console.log(`  load average after: ${await loadAverage()}`);
    console.log("  what            min s    median s   GFLOP/s (encoder GEMM, at median)");
    const med: Record<string, number> = {};
    for (const [k, xs] of Object.entries(t)) {
      const s = stats(xs);
      med[k] = s.median;
      const gf = k.startsWith("gemm") ? `  ${(flop / s.median / 1e9).toFixed(1)}` : "";
      console.log(
        `  ${k.padEnd(14)} ${s.min.toFixed(4).padStart(8)} ${s.median.toFixed(4).padStart(10)}${gf}`,
      );
    }
    console.log(
      `  monobench process CPU time per step: median ${cpu.median.toFixed(3)} s (min ${
        cpu.min.toFixed(3)
      }), ` +
        `${threads} threads`,
    );
    const floor = Math.min(...providers.map((p) => med[`gemm:${p.kind}`]), med["gemm:ts"]);
    const ratios = {
      floor: med.monobench / floor,
      dense: med["torch dense"] / med.monobench,
      sparse: med["torch sparse"] / med.monobench,
    };
    console.log(
      `  floor = fastest GEMM here (${floor.toFixed(4)} s); monobench / floor ${ratios.floor.toFixed(2)}, ` +
        `torch dense / monobench ${ratios.dense.toFixed(2)}, torch sparse / monobench ${
          ratios.sparse.toFixed(2)
        }`,
    );
    summary[eps] = ratios;
  }
  be.destroy();
  tsBe.destroy();
  wasmBe?.destroy();
  await Deno.remove(dir, { recursive: true });
  const last = summary[16] ?? summary[epss[epss.length - 1]];
  const f = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "nan");
  console.log(
    `floor_ratio=${f(last.floor)} torch_dense_ratio=${f(last.dense)} torch_sparse_ratio=${f(last.sparse)}`,
  );
}

if (import.meta.main) await main();
