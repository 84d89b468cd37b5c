/**
 * The price of generality: one BatchTopK + AuxK training step on the fused ops (`batchtopk`) vs
 * the same model written on the tape (`ms-penalty` with μ = 0, examples/ms_penalty.ts, which
 * trains the same numbers), and with the MS penalty on. `deno bench -A bench/tape_bench.ts`;
 * the fused step is the baseline of each group, so the printed ratios compare like with like.
 * CPU backend only (the tape adds host-side work that is the same on every backend).
 */
import "../examples/ms_penalty.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { getSae } from "../src/sae/registry.ts";
import { resolveSaeConfig } from "../src/sae/config.ts";
import { SaeEngine } from "../src/train/engine.ts";
import { Rng } from "../src/util/rng.ts";

const SIZES = [
  { name: "small", d: 128, width: 512, batch: 512 },
  { name: "medium", d: 256, width: 1024, batch: 1024 },
];

function makeStep(variant: string, options: Record<string, number>, s: (typeof SIZES)[number]) {
  const v = getSae(variant);
  // A latent is dead after one batch without firing: AuxK runs every step.
  const cfg = resolveSaeConfig(v, { variant, d: s.d, width: s.width, deadAfterTokens: s.batch, options });
  const rng = new Rng(3);
  const Wdec = v.initDecoder(cfg, rng);
  const eng = new SaeEngine(new CpuBackend(), v, cfg, {
    Wenc: Wdec.slice(),
    benc: new Float32Array(s.width),
    Wdec,
    bdec: new Float32Array(s.d),
    extra: {},
  });
  const x = rng.normals(s.batch * s.d);
  for (let i = 0; i < x.length; i++) x[i] = (x[i] > 0 ? x[i] : 0.1 * x[i]) / Math.sqrt(s.d);
  let step = 0;
  return async () => {
    eng.forwardBackward(x, s.batch, { updateThreshold: true, auxk: step > 0 });
    step++;
    eng.optimizerStep({ lr: 4e-4, step, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
    await eng.readStats();
  };
}

for (const s of SIZES) {
  const cases: [string, string, Record<string, number>][] = [
    ["fused batchtopk", "batchtopk", {}],
    ["tape ms-penalty μ=0 (same model)", "ms-penalty", { ms: 0 }],
    ["tape ms-penalty μ=0.1", "ms-penalty", { ms: 0.1 }],
  ];
  for (const [label, variant, options] of cases) {
    let step: (() => Promise<void>) | null = null;
    Deno.bench({
      name: `${label}: d=${s.d} ω=${s.width} B=${s.batch}, 1 step`,
      group: s.name,
      baseline: variant === "batchtopk",
      n: 5,
      warmup: 1,
      async fn(b) {
        step ??= makeStep(variant, options, s);
        b.start();
        await step();
        b.end();
      },
    });
  }
}
