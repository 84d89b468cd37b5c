/**
 * monobench training-step speed per backend: `deno bench -A bench/train_bench.ts`.
 *
 * One BatchTopK (K = 20) training step as the trainer runs it (src/train/engine.ts:
 * forwardBackward + optimizerStep, then a stats read-back, i.e. one host sync per step) on
 * - "cpu": the TypeScript reference backend,
 * - "blas": the same with the dense encoder in OpenBLAS sgemm (FFI),
 * - "webgpu": Deno's built-in WebGPU (Mesa llvmpipe / lavapipe on a machine without a GPU),
 * at two sizes: small (d=256, ω=1024, B=1024) and paper-like (d=768, ε=4 → ω=3072, B=4096),
 * plus the paper-like size with AuxK active (every latent that did not fire in the previous batch
 * counts as dead; see paper.md §1; blas and webgpu only). The engine and its buffers are built, and one step is run,
 * outside the timed region; every iteration times exactly one step. Unavailable backends are
 * reported and their benches ignored. Data: seeded synthetic non-negative-ish rows (timing only;
 * correctness is tested in tests/).
 */
import "../src/sae/mod.ts";
import { getSae } from "../src/sae/registry.ts";
import { resolveSaeConfig } from "../src/sae/config.ts";
import { initialWeights, SaeEngine } from "../src/train/engine.ts";
import { selectBackend } from "../src/backend/select.ts";
import { BlasBackend } from "../src/backend/blas.ts";
import type { Backend } from "../src/backend/types.ts";
import { Rng } from "../src/util/rng.ts";

interface Size {
  name: string;
  d: number;
  width: number;
  batch: number;
  auxk: boolean;
}

const SIZES: Size[] = [
  { name: "small", d: 256, width: 1024, batch: 1024, auxk: false },
  { name: "paper-like ε=4", d: 768, width: 3072, batch: 4096, auxk: false },
  { name: "paper-like ε=4 + AuxK", d: 768, width: 3072, batch: 4096, auxk: true },
];

async function open(kind: string): Promise<Backend | string> {
  try {
    if (kind === "blas") {
      return BlasBackend.tryCreate() ?? "OpenBLAS unavailable (needs --allow-ffi and libopenblas)";
    }
    return await selectBackend(kind as "cpu" | "webgpu");
  } catch (e) {
    return e instanceof Error ? e.message.split("\n")[0] : String(e);
  }
}

/** Two normalised batches of non-negative-ish rows (mean squared norm ≈ 1). */
function batches(rng: Rng, rows: number, d: number): Float32Array[] {
  return [0, 1].map(() => {
    const x = rng.normals(rows * d);
    for (let i = 0; i < x.length; i++) x[i] = (x[i] > 0 ? x[i] : 0.1 * x[i]) + 0.2;
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i] * x[i];
    const f = Math.sqrt(s / rows);
    for (let i = 0; i < x.length; i++) x[i] /= f;
    return x;
  });
}

interface Bench {
  engine: SaeEngine;
  xs: Float32Array[];
  step: number;
}

function makeBench(backend: Backend, s: Size): Bench {
  const variant = getSae("batchtopk");
  const cfg = resolveSaeConfig(variant, {
    variant: "batchtopk",
    d: s.d,
    width: s.width,
    // AuxK: a latent is dead after one batch without firing, so the AuxK path runs every step.
    deadAfterTokens: s.auxk ? s.batch : 10_000_000,
  });
  const rng = new Rng(3);
  const engine = new SaeEngine(backend, variant, cfg, initialWeights(variant, cfg, rng));
  return { engine, xs: batches(rng, s.batch, s.d), step: 0 };
}

async function trainStep(bn: Bench, s: Size): Promise<void> {
  const x = bn.xs[bn.step % bn.xs.length];
  bn.engine.forwardBackward(x, s.batch, { updateThreshold: true, auxk: s.auxk });
  bn.step++;
  bn.engine.optimizerStep({ lr: 4e-4, step: bn.step, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
  await bn.engine.readStats();
}

const opened: Backend[] = [];
const engines: SaeEngine[] = [];

for (const kind of ["cpu", "blas", "webgpu"]) {
  const be = await open(kind);
  if (typeof be !== "string") opened.push(be);
  if (typeof be === "string") console.log(`train_bench: ${kind} backend skipped: ${be}`);
  for (const s of SIZES) {
    let bn: Bench | null = null;
    Deno.bench({
      name: `${kind} ${s.name}: d=${s.d} ω=${s.width} B=${s.batch}, 1 step`,
      group: s.name,
      baseline: kind === "cpu",
      // The cpu backend's AuxK step is the same TypeScript as blas's: skipped to keep the run short.
      ignore: typeof be === "string" || (kind === "cpu" && s.auxk),
      n: 1,
      warmup: 0,
      async fn(b) {
        if (typeof be === "string") return;
        if (!bn) {
          bn = makeBench(be, s);
          engines.push(bn.engine);
          await trainStep(bn, s); // buffer allocation, pipeline compilation, JIT
        }
        b.start();
        await trainStep(bn, s);
        b.end();
      },
    });
  }
}

globalThis.addEventListener("unload", () => {
  for (const e of engines) e.dispose();
  for (const be of opened) be.destroy();
});
