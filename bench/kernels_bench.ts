/**
 * Kernel benchmarks, WebGPU backend vs CPU backend, at training sizes (paper: B = 4096, K = 20).
 *
 *   deno bench -A bench/kernels_bench.ts
 *
 * Every GPU iteration includes one sync (on Deno's built-in WebGPU each wait costs ~10 ms on a
 * software adapter), i.e. these are per-op latencies as seen by the trainer, not peak throughput.
 * Encode names carry the FLOP count (2·B·d·ω): GFLOP/s = GFLOP / (time per iteration in s).
 * Sizes: MONOBENCH_BENCH_D (default 768), MONOBENCH_BENCH_EPS (expansion for the sparse ops,
 * default 16), MONOBENCH_BENCH_B (default 4096). MONOBENCH_BENCH_GPU=dawn benches Dawn instead.
 * The GPU benches are skipped when no adapter is available.
 */
import { CpuBackend } from "../src/backend/cpu.ts";
import type { Backend, Codes, CodesT, Tensor } from "../src/backend/types.ts";
import { createWebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { settleDawn } from "../src/backend/webgpu/device.ts";
import { Rng } from "../src/util/rng.ts";

const env = (k: string, dflt: number) => Number(Deno.env.get(k) ?? dflt);
const B = env("MONOBENCH_BENCH_B", 4096),
  d = env("MONOBENCH_BENCH_D", 768),
  EPS = env("MONOBENCH_BENCH_EPS", 16);
const K = 20;
const wEnc = 4 * d; // encoder matmul width (CPU at ω = 16·d would take ~30 s per iteration)
const w = EPS * d; // width for selection and sparse ops
const G = 4;
const groups = [w / 16, (3 * w) / 16, (7 * w) / 16, w].map(Math.round);

let gpu: Backend | null = null;
try {
  gpu = await createWebGpuBackend(Deno.env.get("MONOBENCH_BENCH_GPU") === "dawn" ? "dawn" : "webgpu");
} catch (e) {
  console.error(`kernels_bench: no WebGPU (${(e as Error).message}); GPU benches skipped`);
}

const cpu = new CpuBackend();

/** Inputs shared by both backends (built once, uploaded to each). */
const rng = new Rng(42);
const xData = rng.normals(B * d);
const wEncData = rng.normals(wEnc * d, 1 / Math.sqrt(d));
const wData = rng.normals(w * d, 1 / Math.sqrt(d));
const bencData = rng.normals(wEnc, 0.05);
const bdecData = rng.normals(d, 0.1);
// Post-ReLU pre-activations of a [B, ω] batch: about half zero.
const preData = new Float32Array(B * w);
for (let i = 0; i < preData.length; i++) {
  const v = rng.normal();
  preData[i] = v > 0 ? v : 0;
}
const gradSData = rng.normals(G * B * d, 1e-3);

interface Setup {
  b: Backend;
  x: Tensor;
  WencS: Tensor;
  bencS: Tensor;
  bdec: Tensor;
  preS: Tensor;
  pre: Tensor;
  Wdec: Tensor;
  thr: Tensor;
  rowsOut: Tensor;
  codes: Codes;
  codesT: CodesT;
  xhat: Tensor;
  gradS: Tensor;
  gradVal: Tensor;
  gWe: Tensor;
  gbe: Tensor;
  gWd: Tensor;
  m: Tensor;
  v: Tensor;
}

async function setup(b: Backend): Promise<Setup> {
  const s: Setup = {
    b,
    x: b.tensor(xData, [B, d]),
    WencS: b.tensor(wEncData, [wEnc, d]),
    bencS: b.tensor(bencData, [wEnc]),
    bdec: b.tensor(bdecData, [d]),
    preS: b.zeros([B, wEnc]),
    pre: b.tensor(preData, [B, w]),
    Wdec: b.tensor(wData, [w, d]),
    thr: b.zeros([2]),
    rowsOut: b.zeros([B]),
    codes: b.codes(B, w, 2 * K * B),
    codesT: b.codesT(B, w, 2 * K * B),
    xhat: b.zeros([G, B, d]),
    gradS: b.tensor(gradSData, [G, B, d]),
    gradVal: b.zeros([2 * K * B]),
    gWe: b.zeros([w, d]),
    gbe: b.zeros([w]),
    gWd: b.zeros([w, d]),
    m: b.zeros([w, d]),
    v: b.zeros([w, d]),
  };
  // BatchTopK codes: threshold = (K·B)-th largest of the batch.
  b.kthLargest(s.pre, K * B, s.thr, 0);
  b.gather(s.pre, { kind: "scalar", t: s.thr, slot: 0 }, null, false, s.codes);
  b.transpose(s.codes, s.codesT);
  await b.sync();
  return s;
}

const setups = new Map<string, Promise<Setup>>();
function get(b: Backend): Promise<Setup> {
  let p = setups.get(b.name);
  if (!p) setups.set(b.name, p = setup(b));
  return p;
}

function bench(group: string, name: string, n: number, op: (s: Setup) => void): void {
  for (const b of [gpu, cpu]) {
    Deno.bench({
      name: `${name} [${b ? b.name : "webgpu"}]`,
      group,
      baseline: b === cpu,
      ignore: b === null,
      n,
      warmup: 1,
      async fn(ctx) {
        const s = await get(b!);
        ctx.start();
        op(s);
        await s.b.sync();
        ctx.end();
      },
    });
  }
}

const gflop = (2 * B * d * wEnc) / 1e9;
bench("encode", `encode B=${B} d=${d} ω=${wEnc} (${gflop.toFixed(1)} GFLOP)`, 2, (s) => {
  s.b.encode(s.x, s.WencS, s.bencS, s.bdec, s.preS);
});
bench("kth", `kthLargest over [${B}, ${w}], k=${K}·B`, 3, (s) => s.b.kthLargest(s.pre, K * B, s.thr, 1));
bench(
  "kthRows",
  `kthLargestRows [${B}, ${w}], k=${K}`,
  3,
  (s) => s.b.kthLargestRows(s.pre, K, null, s.rowsOut),
);
bench("gather", `gather [${B}, ${w}] (BatchTopK threshold)`, 3, (s) => {
  s.b.gather(s.pre, { kind: "scalar", t: s.thr, slot: 0 }, null, false, s.codes);
});
bench("transpose", `transpose (${K * B} entries)`, 3, (s) => s.b.transpose(s.codes, s.codesT));
bench(
  "decode",
  `decode G=${G} B=${B} d=${d} ω=${w}`,
  3,
  (s) => s.b.decode(s.codes, s.Wdec, s.bdec, groups, s.xhat),
);
bench("decodeBackward", `decodeBackward G=${G}`, 3, (s) => {
  s.b.decodeBackward(s.codes, s.gradS, s.Wdec, groups, s.gradVal, false);
});
bench("latentGrads", `latentGrads G=${G} (with gradWdec)`, 3, (s) => {
  s.b.latentGrads(s.codes, s.codesT, s.gradVal, s.x, s.bdec, s.gradS, groups, s.gWe, s.gbe, s.gWd);
});
bench("adam", `adam [${w}, ${d}]`, 3, (s) => {
  s.b.adam(s.Wdec, s.gWd, s.m, s.v, { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 }, null);
});

// A Dawn device still alive when the bench isolate is torn down crashes the process
// (docs/dawn.md): the last bench, run once, destroys it and lets the event loop turn.
Deno.bench({
  name: "(teardown: release the GPU device)",
  group: "teardown", // ungrouped benches run first
  ignore: gpu === null,
  n: 1,
  warmup: 0,
  async fn() {
    gpu?.destroy();
    gpu = null;
    await settleDawn();
  },
});
