/**
 * Worker of the multi-threaded CPU backend: on each job message, takes chunks of the job from
 * the shared counter until none is left, runs the kernel (`mt_kernels.ts`) on each, stores the
 * chunk's partial result and counts it done (see `pool.ts`).
 */
import { KERNELS } from "./mt_kernels.ts";
import { takeChunk } from "./pool.ts";

interface Job {
  kernel: string;
  args: Record<string, unknown>;
  bounds: number[];
  job: number;
  n: number;
  ctl: Int32Array;
  res: Float64Array;
}

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = (e: MessageEvent<Job | "ping">) => {
  if (e.data === "ping") {
    scope.postMessage("ready");
    return;
  }
  const j = e.data, f = KERNELS[j.kernel];
  for (;;) {
    const c = takeChunk(j.ctl, j.job, j.n);
    if (c < 0) break;
    try {
      j.res[c] = f(j.args, j.bounds[c], j.bounds[c + 1], c);
    } catch (err) {
      j.res[c] = NaN;
      Atomics.store(j.ctl, 2, 1);
      console.error(`monobench worker: ${j.kernel}: ${err instanceof Error ? err.message : err}`);
    }
    Atomics.add(j.ctl, 1, 1);
    Atomics.notify(j.ctl, 1);
  }
};
