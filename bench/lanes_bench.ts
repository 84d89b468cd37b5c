/**
 * Lanes against one multi-threaded backend, in one run: `deno task bench:lanes [--threads N]
 * [--rounds R] [--steps S]`.
 *
 * For each size (the default preset's B = 512 units at d 64 / 160 / 320, and a paper-like
 * B = 4096 one), N units are trained (BatchTopK, AuxK on, synthetic rows, S steps each):
 * - "one backend": one after another on one cpu-mt backend with N threads;
 * - "N lanes": side by side, one worker per unit, each on a one-thread cpu-mt backend.
 * Rounds are interleaved; min and median wall seconds of each side are reported, and a last
 * line `lanes_speedup <size>=<one backend / lanes> …`, one entry per size.
 */
import { parseArgs } from "node:util";
import { selectBackend } from "../src/backend/select.ts";
import { defaultThreads } from "../src/backend/pool.ts";
import { trainUnit, type UnitSpec } from "./lanes_worker.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string" },
    rounds: { type: "string", default: "3" },
    steps: { type: "string", default: "40" },
  },
});
const threads = values.threads ? Number(values.threads) : defaultThreads();
const rounds = Number(values.rounds), steps = Number(values.steps);
if (!(threads >= 2 && rounds >= 1 && steps >= 1)) {
  console.error("monobench: bench:lanes needs --threads ≥ 2, --rounds ≥ 1 and --steps ≥ 1");
  Deno.exit(2);
}

const SIZES: (UnitSpec & { name: string })[] = [
  { name: "d=64 ω=256 B=512", d: 64, width: 256, batch: 512, steps },
  { name: "d=160 ω=640 B=512", d: 160, width: 640, batch: 512, steps },
  { name: "d=320 ω=1280 B=512", d: 320, width: 1280, batch: 512, steps },
  { name: "d=320 ω=5120 B=512", d: 320, width: 5120, batch: 512, steps },
  {
    name: "d=768 ω=3072 B=4096",
    d: 768,
    width: 3072,
    batch: 4096,
    steps: Math.max(1, Math.round(steps / 8)),
  },
];

interface Lane {
  w: Worker;
  next: () => Promise<{ type: string; seconds?: number; description?: string }>;
}
function lane(): Lane {
  const w = new Worker(new URL("./lanes_worker.ts", import.meta.url), { type: "module" });
  let pending: ((m: never) => void) | null = null;
  w.onmessage = (e) => pending?.(e.data as never);
  return { w, next: () => new Promise((r) => (pending = r)) };
}

const one = await selectBackend("cpu-mt", { threads });
const lanes = Array.from({ length: threads }, lane);
const ready = await Promise.all(lanes.map((l) => {
  const p = l.next();
  l.w.postMessage({ type: "init", threads: 1 });
  return p;
}));
console.log(`one backend: ${one.description}`);
console.log(`${threads} lanes, each: ${ready[0].description}`);
console.log(`${threads} units per size, ${rounds} interleaved rounds; wall seconds, min / median\n`);

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor((a.length - 1) / 2)];
const speedups: string[] = [];
for (const s of SIZES) {
  await trainUnit(one, { ...s, steps: 2 }, 99); // warm-up: JIT, sessions, buffers
  const seq: number[] = [], par: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t = performance.now();
    for (let i = 0; i < threads; i++) await trainUnit(one, s, i);
    seq.push((performance.now() - t) / 1000);
    t = performance.now();
    await Promise.all(lanes.map((l, i) => {
      const p = l.next();
      l.w.postMessage({ type: "unit", unit: s, seed: i });
      return p;
    }));
    par.push((performance.now() - t) / 1000);
  }
  const ratio = median(seq) / median(par);
  console.log(
    `${s.name.padEnd(22)} one backend ${Math.min(...seq).toFixed(2)} / ${median(seq).toFixed(2)}   ` +
      `lanes ${Math.min(...par).toFixed(2)} / ${median(par).toFixed(2)}   one backend / lanes ${
        ratio.toFixed(2)
      }`,
  );
  speedups.push(`${s.name.replaceAll(" ", "_")}=${ratio.toFixed(2)}`);
}
// Lanes end together, once idle (see src/run/lanes.ts).
await Promise.all(lanes.map((l) => {
  const p = l.next();
  l.w.postMessage({ type: "close" });
  return p;
}));
for (const l of lanes) l.w.terminate();
one.destroy();
console.log(`\nlanes_speedup ${speedups.join(" ")}`);
