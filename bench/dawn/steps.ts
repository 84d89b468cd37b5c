/**
 * Training-step speed, Dawn (npm:webgpu) next to Deno's built-in WebGPU:
 *
 *   deno bench -A bench/dawn/steps.ts
 *
 * One BatchTopK (K = 20) step as the trainer runs it (forwardBackward + optimizerStep, then a stats
 * read-back, i.e. one host sync per step), at the sizes of bench/train_bench.ts. The built-in
 * backend is each group's baseline, so `deno bench` prints Dawn's time as a ratio of it. Dawn runs
 * on its default route (Vulkan, else OpenGL); where that is not OpenGL, Dawn's OpenGL route is
 * benched too. On software adapters only the small size runs (a paper-like step takes seconds
 * there); MONOBENCH_BENCH_SIZES=all runs every size anyway. Not part of `deno task bench` (the
 * file name does not end in _bench.ts).
 */
import "../../src/sae/mod.ts";
import { getSae } from "../../src/sae/registry.ts";
import { resolveSaeConfig } from "../../src/sae/config.ts";
import { initialWeights, SaeEngine } from "../../src/train/engine.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../../src/backend/webgpu/backend.ts";
import { settleDawn } from "../../src/backend/webgpu/device.ts";
import { Rng } from "../../src/util/rng.ts";

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

type Opened = { label: string; be: WebGpuBackend } | { label: string; why: string };

async function open(label: string, kind: "webgpu" | "dawn", dawnOptions?: string[]): Promise<Opened> {
  try {
    return { label, be: await createWebGpuBackend(kind, dawnOptions ? { dawnOptions } : {}) };
  } catch (e) {
    return { label, why: e instanceof Error ? e.message.split("\n")[0] : String(e) };
  }
}

const backends: Opened[] = [await open("webgpu", "webgpu"), await open("dawn", "dawn")];
const dawn = backends[1];
if ("be" in dawn && !/OpenGL/.test(dawn.be.description)) {
  backends.push(await open("dawn-gl", "dawn", ["backend=opengl"]));
}
for (const b of backends) {
  console.log(`steps: ${b.label}: ${"be" in b ? b.be.description : `skipped (${b.why})`}`);
}
const software = backends.some((b) => "be" in b && b.be.software);
const all = Deno.env.get("MONOBENCH_BENCH_SIZES") === "all";

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

function makeBench(be: WebGpuBackend, s: Size): Bench {
  const variant = getSae("batchtopk");
  const cfg = resolveSaeConfig(variant, {
    variant: "batchtopk",
    d: s.d,
    width: s.width,
    // AuxK: a latent is dead after one batch without firing, so the AuxK path runs every step.
    deadAfterTokens: s.auxk ? s.batch : 10_000_000,
  });
  const rng = new Rng(3);
  const engine = new SaeEngine(be, variant, cfg, initialWeights(variant, cfg, rng));
  return { engine, xs: batches(rng, s.batch, s.d), step: 0 };
}

async function trainStep(bn: Bench, s: Size): Promise<void> {
  bn.engine.forwardBackward(bn.xs[bn.step % bn.xs.length], s.batch, { updateThreshold: true, auxk: s.auxk });
  bn.step++;
  bn.engine.optimizerStep({ lr: 4e-4, step: bn.step, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
  await bn.engine.readStats();
}

const engines: SaeEngine[] = [];
for (const b of backends) {
  for (const s of SIZES) {
    let bn: Bench | null = null;
    Deno.bench({
      name: `${b.label} ${s.name}: d=${s.d} ω=${s.width} B=${s.batch}, 1 step`,
      group: s.name,
      baseline: b.label === "webgpu",
      ignore: !("be" in b) || (software && !all && s.name !== "small"),
      warmup: 2,
      n: software ? 5 : 50,
      async fn(t) {
        if (!("be" in b)) return;
        if (!bn) {
          bn = makeBench(b.be, s);
          engines.push(bn.engine);
          await trainStep(bn, s); // buffers, pipeline compilation, JIT
        }
        t.start();
        await trainStep(bn, s);
        t.end();
      },
    });
  }
}

// Not a measurement: a Dawn device must be destroyed, and the event loop turned, before this
// module's isolate is torn down, or the process crashes at exit (settleDawn in device.ts).
Deno.bench({
  name: "(teardown: release the devices, not a measurement)",
  group: "teardown",
  n: 1,
  warmup: 0,
  async fn() {
    for (const e of engines) e.dispose();
    for (const b of backends) if ("be" in b) b.be.destroy();
    await settleDawn();
  },
});
