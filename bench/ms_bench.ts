/**
 * Speed of the metrics: `deno bench -A bench/ms_bench.ts`.
 * - msScores dense (raw neurons): n=5000, cols=1280, D=2048 → 2·n·cols·D ≈ 26.2 GFLOP of float64
 *   multiply-adds in the blocked Zᵀ Ê product;
 * - msScores CSR (SAE latents): n=5000, cols=20480, 20 nonzeros per row, D=2048;
 * - reconMetrics: n=5000, d=1024, ω=16384, 20 nonzeros per row.
 * The data is synthetic (Rng seeded); only timings matter here (correctness is in tests/).
 */
import type { ActMatrix } from "../src/types.ts";
import { Rng } from "../src/util/rng.ts";
import { msScores } from "../src/metrics/ms.ts";
import { reconMetrics } from "../src/metrics/recon.ts";

function randomCsr(rng: Rng, n: number, cols: number, k: number): Extract<ActMatrix, { kind: "csr" }> {
  const rowPtr = new Uint32Array(n + 1);
  const idx = new Uint32Array(n * k);
  const val = new Float32Array(n * k);
  const pick = new Set<number>();
  for (let r = 0; r < n; r++) {
    pick.clear();
    // skewed latent frequencies, as in trained SAEs
    while (pick.size < k) pick.add(Math.floor(cols * rng.next() ** 2));
    const sorted = [...pick].sort((a, b) => a - b);
    for (let t = 0; t < k; t++) {
      idx[r * k + t] = sorted[t];
      val[r * k + t] = 0.1 + rng.next() * 2;
    }
    rowPtr[r + 1] = (r + 1) * k;
  }
  return { kind: "csr", n, cols, rowPtr, idx, val };
}

const N = 5000, D = 2048;
let cache: { emb: Float32Array; dense: ActMatrix; csr: ActMatrix } | null = null;
function data() {
  if (cache) return cache;
  const rng = new Rng(42);
  const emb = rng.normals(N * D);
  for (let i = 0; i < emb.length; i++) emb[i] += 0.2;
  const dense: ActMatrix = { kind: "dense", n: N, cols: 1280, data: rng.normals(N * 1280) };
  const csr = randomCsr(rng, N, 20480, 20);
  cache = { emb, dense, csr };
  return cache;
}

Deno.bench({
  name: "msScores dense n=5000 cols=1280 D=2048",
  group: "ms",
  n: 1,
  warmup: 0,
  fn(b) {
    const { emb, dense } = data();
    b.start();
    msScores(dense, emb, D);
    b.end();
  },
});

Deno.bench({
  name: "msScores csr n=5000 cols=20480 nnz/row=20 D=2048",
  group: "ms",
  n: 3,
  warmup: 1,
  fn(b) {
    const { emb, csr } = data();
    b.start();
    msScores(csr, emb, D);
    b.end();
  },
});

let reconCache: { x: Float32Array; codes: ActMatrix; Wdec: Float32Array; bdec: Float32Array } | null = null;
Deno.bench({
  name: "reconMetrics n=5000 d=1024 ω=16384 nnz/row=20",
  group: "recon",
  n: 3,
  warmup: 1,
  fn(b) {
    if (!reconCache) {
      const rng = new Rng(7);
      const d = 1024, w = 16384;
      reconCache = {
        x: rng.normals(N * d),
        codes: randomCsr(rng, N, w, 20),
        Wdec: rng.normals(w * d, 0.03),
        bdec: rng.normals(d, 0.1),
      };
    }
    const { x, codes, Wdec, bdec } = reconCache;
    b.start();
    reconMetrics(x, N, 1024, codes, Wdec, bdec);
    b.end();
  },
});
