/**
 * The multi-threaded CPU backend against the single-threaded oracle (CpuBackend), op by op on
 * random data and for whole training steps. A small `grain` forces the threaded paths on small
 * shapes; row counts not divisible by the thread count, empty rows, B = 1 and slices around the
 * boundaries are covered.
 */
import assert from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu.ts";
import { CpuMtBackend, type CpuMtOptions, type GemmChoice } from "../src/backend/mt.ts";
import { openBlas } from "../src/backend/blas.ts";
import { MlasGemm } from "../src/backend/mlas.ts";
import type { Backend, Codes, Tensor } from "../src/backend/types.ts";
import { getSae, resolveSaeConfig } from "../src/sae/mod.ts";
import { SaeEngine } from "../src/train/engine.ts";
import { Rng } from "../src/util/rng.ts";

const cpu = new CpuBackend();

async function withMt(
  opts: CpuMtOptions & { threads: number; gemm: GemmChoice },
  f: (b: CpuMtBackend) => Promise<void> | void,
) {
  const b = await CpuMtBackend.create({ grain: 16, ...opts });
  try {
    await f(b);
  } finally {
    b.destroy();
  }
}

function close(got: ArrayLike<number>, exp: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(got.length, exp.length, `${what}: length`);
  for (let i = 0; i < exp.length; i++) {
    const e = exp[i], g = got[i];
    if (Object.is(e, g)) continue;
    assert.ok(Math.abs(g - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: ${g} vs ${e}`);
  }
}

async function read(b: Backend, t: Tensor): Promise<Float32Array | Uint32Array> {
  return await b.read(t);
}

/** Random CSR codes: row b gets 0..perRow entries among `cols` latents (some rows empty). */
function randomCodes(be: Backend, rng: Rng, rows: number, cols: number, perRow: number): Codes {
  const c = be.codes(rows, cols, rows * perRow);
  const rp = new Uint32Array(rows + 1),
    idx = new Uint32Array(rows * perRow),
    val = new Float32Array(rows * perRow);
  let e = 0;
  for (let b = 0; b < rows; b++) {
    const pick = new Set<number>();
    const want = b % 5 === 3 ? 0 : rng.int(perRow + 1);
    while (pick.size < want) pick.add(rng.int(cols));
    for (const j of [...pick].sort((x, y) => x - y)) {
      idx[e] = j;
      val[e] = rng.next() + 0.1;
      e++;
    }
    rp[b + 1] = e;
  }
  be.write(c.rowPtr, rp);
  be.write(c.idx, idx);
  be.write(c.val, val);
  return c;
}

const SHAPES: [B: number, d: number, w: number][] = [[1, 7, 33], [67, 13, 96], [130, 24, 257]];

/** Kernel sets under test: the WebAssembly SIMD kernels ("wasm") and the TypeScript ones ("ts"). */
const CONFIGS: [threads: number, gemm: "wasm" | "ts"][] = [[1, "wasm"], [2, "wasm"], [3, "wasm"], [2, "ts"], [
  3,
  "ts",
]];

for (const [threads, kern] of CONFIGS) {
  // TypeScript kernels reproduce the reference's float64 sums; the SIMD kernels sum in float32.
  const tolOpt = kern === "ts" ? 0 : 2e-6, tolSparse = kern === "ts" ? 1e-6 : 1e-5;
  Deno.test(`cpu-mt (${kern}, ${threads} threads): selection, gather and elementwise ops equal the oracle`, async () => {
    await withMt({ threads, gemm: kern }, async (mt) => {
      const rng = new Rng(3 + threads);
      for (const [B, , w] of SHAPES) {
        const v = rng.normals(B * w);
        // Ties and zeros: a selection must keep every tie of the k-th value.
        for (let i = 0; i < v.length; i += 7) v[i] = 0.5;
        for (let i = 0; i < v.length; i += 5) v[i] = 0;
        const mask = Uint32Array.from({ length: w }, (_, j) => (j % 3 === 0 ? 1 : 0));
        for (const k of [1, 5, B * 3, B * w, B * w + 1]) {
          const run = async (b: Backend) => {
            const vt = b.tensor(v, [B, w]), out = b.zeros([2]);
            b.kthLargest(vt, k, out, 1);
            const rows = b.zeros([B]);
            b.kthLargestRows(vt, Math.min(k, 9), b.tensor(mask, [w]), rows);
            const codes = b.codes(B, w, Math.max(1, Math.floor(B * w / 3)));
            b.gather(vt, { kind: "scalar", t: out, slot: 1 }, null, false, codes);
            const codes2 = b.codes(B, w, B * w);
            b.gather(vt, { kind: "rows", t: rows }, b.tensor(mask, [w]), true, codes2);
            return [
              await read(b, out),
              await read(b, rows),
              await read(b, codes.rowPtr),
              await read(b, codes.idx),
              await read(b, codes.val),
              await read(b, codes2.rowPtr),
              await read(b, codes2.idx),
              await read(b, codes2.val),
            ];
          };
          const got = await run(mt), exp = await run(cpu);
          for (let i = 0; i < exp.length; i++) {
            assert.deepEqual(got[i], exp[i], `B=${B} w=${w} k=${k} output ${i}`);
          }
        }
        // Adam / projection / renorm / sum of squares / fill on [w, B] matrices.
        const P = rng.normals(B * w), G = rng.normals(B * w), M = rng.normals(B * w, 0.1);
        const V = Float32Array.from(rng.normals(B * w), (x) => x * x);
        const run2 = async (b: Backend) => {
          const p = b.tensor(P, [w, B]),
            g = b.tensor(G, [w, B]),
            m = b.tensor(M, [w, B]),
            vv = b.tensor(V, [w, B]);
          const stats = b.zeros([4]);
          b.projectDecoderGrad(p, g);
          b.sumSquares([g, m], stats, 2);
          b.adam(p, g, m, vv, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 3 }, {
            normSq: stats,
            slot: 2,
            maxNorm: 1,
          });
          b.renormRows(p);
          const f = b.zeros([B * w]);
          b.fill(f, 0.25);
          return [
            await read(b, p),
            await read(b, g),
            await read(b, m),
            await read(b, vv),
            await read(b, stats),
            await read(b, f),
          ];
        };
        const got = await run2(mt), exp = await run2(cpu);
        for (let i = 0; i < exp.length; i++) {
          close(got[i], exp[i], `B=${B} w=${w} optimiser output ${i}`, i === 4 ? 1e-6 : tolOpt);
        }
      }
    });
  });

  Deno.test(`cpu-mt (${kern}, ${threads} threads): kthLargest then gather (one selection pass) equal the oracle`, async () => {
    await withMt({ threads, gemm: kern }, async (mt) => {
      const rng = new Rng(41 + threads);
      for (const [B, w] of [[1, 300], [67, 96], [130, 257]]) {
        const v = rng.normals(B * w);
        for (let i = 0; i < v.length; i += 11) v[i] = 0.75; // ties at the k-th value
        for (let i = 3; i < v.length; i += 13) v[i] = 0;
        v[5] = NaN;
        for (const k of [1, 4 * B, Math.floor(B * w / 3)]) {
          for (const strict of [false, true]) {
            for (const capShort of [0, 3]) {
              const run = async (b: Backend) => {
                const vt = b.tensor(v, [B, w]), out = b.zeros([2]);
                const codes = b.codes(B, w, Math.max(1, k + B - capShort * B));
                b.kthLargest(vt, k, out, 1);
                b.gather(vt, { kind: "scalar", t: out, slot: 1 }, null, strict, codes);
                return [
                  await b.read(out),
                  await b.read(codes.rowPtr),
                  await b.read(codes.idx),
                  await b.read(codes.val),
                ];
              };
              const got = await run(mt), exp = await run(cpu);
              for (let i = 0; i < exp.length; i++) {
                assert.deepEqual(
                  got[i],
                  exp[i],
                  `B=${B} w=${w} k=${k} strict=${strict} cap-${capShort} output ${i}`,
                );
              }
            }
          }
          // A threshold below the selection's bound (another slot) must not use its candidates.
          const run2 = async (b: Backend) => {
            const vt = b.tensor(v, [B, w]), out = b.tensor(new Float32Array([0.01, 0]), [2]);
            const codes = b.codes(B, w, B * w);
            b.kthLargest(vt, k, out, 1);
            b.gather(vt, { kind: "scalar", t: out, slot: 0 }, null, false, codes);
            return [await b.read(codes.rowPtr), await b.read(codes.idx), await b.read(codes.val)];
          };
          const got = await run2(mt), exp = await run2(cpu);
          for (let i = 0; i < exp.length; i++) {
            assert.deepEqual(got[i], exp[i], `B=${B} w=${w} k=${k} low threshold ${i}`);
          }
        }
      }
    });
  });

  Deno.test(`cpu-mt (${kern}, ${threads} threads): gather that counts then writes (large regions) equals the oracle`, async () => {
    await withMt({ threads, gemm: kern, gatherRegionBytes: 0 }, async (mt) => {
      const rng = new Rng(51 + threads);
      for (const [B, w] of [[1, 40], [67, 96], [130, 257]]) {
        const v = rng.normals(B * w), thr = rng.normals(B, 0.5);
        const mask = Uint32Array.from({ length: w }, (_, j) => (j % 4 === 1 ? 0 : 1));
        for (const cap of [B * w, Math.floor(B * w / 5), 1]) {
          const run = async (b: Backend) => {
            const vt = b.tensor(v, [B, w]), t = b.tensor(thr, [B]);
            const c1 = b.codes(B, w, cap), c2 = b.codes(B, w, cap);
            b.gather(vt, { kind: "rows", t }, b.tensor(mask, [w]), false, c1);
            b.gather(vt, { kind: "scalar", t, slot: 2 % B }, null, true, c2);
            const outs = [c1.rowPtr, c1.idx, c1.val, c2.rowPtr, c2.idx, c2.val];
            return await Promise.all(outs.map((x) => b.read(x)));
          };
          const got = await run(mt), exp = await run(cpu);
          for (let i = 0; i < exp.length; i++) {
            assert.deepEqual(got[i], exp[i], `B=${B} w=${w} cap=${cap} output ${i}`);
          }
        }
      }
    });
  });

  Deno.test(`cpu-mt (${kern}, ${threads} threads): spmm, sddmm and spmmT equal the oracle`, async () => {
    await withMt({ threads, gemm: kern }, async (mt) => {
      const rng = new Rng(61 + threads);
      for (const [B, d, w] of SHAPES) {
        const W = rng.normals(w * d, 0.3), A = rng.normals(B * d), O = rng.normals(Math.max(B, w) * d, 0.1);
        const seed = rng.int(1 << 30);
        for (const accumulate of [false, true]) {
          const run = async (b: Backend) => {
            const codes = randomCodes(b, new Rng(seed), B, w, 6);
            const codesT = b.codesT(B, w, codes.cap);
            b.transpose(codes, codesT);
            const vals = b.tensor(rng2(codes.cap), [codes.cap]);
            const Wt = b.tensor(W, [w, d]), At = b.tensor(A, [B, d]);
            const o1 = b.tensor(O.subarray(0, B * d), [B, d]);
            b.spmm(codes, vals, Wt, o1, accumulate);
            const o2 = b.tensor(rng2(codes.cap), [codes.cap]);
            b.sddmm(codes, At, Wt, o2, accumulate);
            const o3 = b.tensor(O.subarray(0, w * d), [w, d]);
            b.spmmT(codes, codesT, vals, At, o3, accumulate);
            return [await b.read(o1), await b.read(o2), await b.read(o3)];
          };
          const got = await run(mt), exp = await run(cpu);
          for (let i = 0; i < exp.length; i++) {
            close(
              got[i],
              exp[i],
              `B=${B} d=${d} w=${w} acc=${accumulate} ${["spmm", "sddmm", "spmmT"][i]}`,
              tolSparse,
            );
          }
        }
      }
    });
  });

  Deno.test(`cpu-mt (${kern}, ${threads} threads): sparse decoder ops and losses equal the oracle`, async () => {
    await withMt({ threads, gemm: kern }, async (mt) => {
      const rng = new Rng(17 + threads);
      for (const [B, d, w] of SHAPES) {
        for (const groups of [[w], [Math.ceil(w / 4), Math.ceil(w / 2), w]]) {
          const G = groups.length;
          const Wd = rng.normals(w * d, 0.3), We = rng.normals(w * d, 0.3), bd = rng.normals(d, 0.1);
          const X = rng.normals(B * d);
          const seed = rng.int(1 << 30);
          const run = (b: Backend) => {
            const codes = randomCodes(b, new Rng(seed), B, w, 6);
            const codesT = b.codesT(B, w, codes.cap);
            b.transpose(codes, codesT);
            const W = b.tensor(Wd, [w, d]),
              Wenc = b.tensor(We, [w, d]),
              bdec = b.tensor(bd, [d]),
              x = b.tensor(X, [B, d]);
            const xhat = b.zeros([G, B, d]), gradS = b.zeros([G, B, d]), stats = b.zeros([4]);
            b.decode(codes, W, bdec, groups, xhat);
            const weights = groups.map((_, i) => 1 / (i + 2));
            b.reconLossGrad(xhat, x, weights, gradS, stats, 0);
            const gv = b.zeros([Math.max(codes.cap, 1)]);
            b.fill(gv, 7); // overwritten (accumulate = false), also past the last entry
            b.decodeBackward(codes, gradS, W, groups, gv, false);
            b.decodeBackward(codes, gradS, W, groups, gv, true);
            const gWe = b.tensor(rng2(w * d), [w, d]), gbe = b.zeros([w]), gWd = b.zeros([w, d]);
            b.latentGrads(codes, codesT, gv, x, bdec, gradS, groups, gWe, gbe, gWd);
            const gb = b.tensor(new Float32Array(d).fill(1), [d]);
            b.bdecGrad(codes, gv, Wenc, gradS, true, gb, true);
            const gb2 = b.zeros([d]);
            b.bdecGrad(codes, gv, Wenc, gradS, false, gb2, false);
            return [xhat, gradS, stats, gv, gWe, gbe, gWd, gb, gb2].map((t) => b.read(t));
          };
          const got = await Promise.all(run(mt)), exp = await Promise.all(run(cpu));
          const names = [
            "xhat",
            "gradS",
            "stats",
            "gradVal",
            "gradWenc",
            "gradBenc",
            "gradWdec",
            "gradBdec",
            "gradBdec2",
          ];
          for (let i = 0; i < exp.length; i++) {
            close(got[i], exp[i], `B=${B} d=${d} w=${w} G=${G} ${names[i]}`, tolSparse);
          }
        }
      }
    });
  });
}

/** A deterministic non-zero start for accumulated gradients. */
function rng2(n: number): Float32Array {
  return new Rng(99).normals(n, 0.01);
}

const GEMMS: GemmChoice[] = ["ts", "wasm"];
if (MlasGemm.tryCreate(1)) GEMMS.push("mlas");
if (openBlas()) GEMMS.push("openblas");

for (const gemm of GEMMS) {
  Deno.test(`cpu-mt (${gemm} GEMM): encode equals the oracle (B=1, odd shapes, ReLU)`, async () => {
    await withMt({ threads: 2, gemm }, async (mt) => {
      assert.equal(mt.gemmKind, gemm);
      const rng = new Rng(23);
      for (const [B, d, w] of [[1, 3, 5], [7, 13, 29], [65, 96, 384], [33, 17, 1]]) {
        const x = rng.normals(B * d),
          W = rng.normals(w * d, 0.3),
          be = rng.normals(w, 0.1),
          bd = rng.normals(d, 0.2);
        const run = async (b: Backend) => {
          const pre = b.zeros([B, w]);
          b.encode(b.tensor(x, [B, d]), b.tensor(W, [w, d]), b.tensor(be, [w]), b.tensor(bd, [d]), pre);
          return await b.read(pre) as Float32Array;
        };
        const got = await run(mt), exp = await run(cpu);
        close(got, exp, `${gemm} B=${B} d=${d} w=${w}`, gemm === "ts" ? 0 : 1e-4);
      }
    });
  });

  Deno.test(`cpu-mt (${gemm} GEMM): matmul in every layout equals the oracle`, async () => {
    await withMt({ threads: 2, gemm }, async (mt) => {
      const rng = new Rng(29);
      for (const [M, N, K] of [[1, 1, 1], [5, 9, 7], [33, 17, 65], [64, 41, 96], [3, 70, 0]]) {
        for (const ta of [false, true]) {
          for (const tb of [false, true]) {
            const A = rng.normals(M * K), Bm = rng.normals(K * N), C0 = rng.normals(M * N);
            for (const [accumulate, alpha] of [[false, 1], [true, 1], [true, -0.5], [false, 2]] as const) {
              const run = async (b: Backend, host: Backend) => {
                // Operands from `host`: another backend's tensors must work too (copied in).
                const a = host.tensor(A, ta ? [K, M] : [M, K]), bb = host.tensor(Bm, tb ? [N, K] : [K, N]);
                const c = b.tensor(C0, [M, N]);
                b.matmul(a, bb, c, { ta, tb, accumulate, alpha });
                return await b.read(c);
              };
              const exp = await run(cpu, cpu);
              for (const host of [mt, cpu]) {
                const got = await run(mt, host);
                close(
                  got,
                  exp,
                  `${gemm} M=${M} N=${N} K=${K} ta=${ta} tb=${tb} acc=${accumulate} α=${alpha}`,
                  1e-4,
                );
              }
            }
          }
        }
      }
    });
  });
}

for (const [variant, auxk] of [["batchtopk", false], ["matryoshka", true]] as const) {
  Deno.test(`cpu-mt: a whole ${variant} training step${auxk ? " with AuxK" : ""} equals the oracle`, async () => {
    for (const gemm of GEMMS) {
      await withMt({ threads: 2, gemm, grain: 64 }, async (mt) => {
        const d = 24, width = 192, B = 67;
        const v = getSae(variant);
        const cfg = resolveSaeConfig(v, { variant, d, width, k: 4, deadAfterTokens: 1 });
        const rng = new Rng(5);
        const w = {
          Wenc: rng.normals(width * d, 0.2),
          benc: rng.normals(width, 0.05),
          Wdec: rng.normals(width * d, 0.2),
          bdec: rng.normals(d, 0.1),
        };
        const x = rng.normals(B * d);
        const step = async (b: Backend) => {
          const eng = new SaeEngine(b, v, cfg, w);
          for (let s = 1; s <= 3; s++) {
            eng.forwardBackward(x, B, { updateThreshold: true, auxk });
            if (s === 3) break;
            eng.optimizerStep({ lr: 1e-3, step: s, beta1: 0.9, beta2: 0.999, eps: 1e-8, maxNorm: 1 });
          }
          const out = { g: await eng.readGrads(), p: await eng.readWeights(), s: await eng.readStats() };
          eng.dispose();
          return out;
        };
        const got = await step(mt), exp = await step(cpu);
        const tol = gemm === "ts" ? 1e-5 : 2e-3;
        for (const n of ["Wenc", "benc", "Wdec", "bdec"] as const) {
          close(got.g[n], exp.g[n], `${gemm} grad ${n}`, tol);
          close(got.p[n], exp.p[n], `${gemm} weight ${n}`, tol);
        }
        close([got.s.loss, got.s.aux, got.s.dead], [exp.s.loss, exp.s.aux, exp.s.dead], `${gemm} stats`, tol);
        if (auxk) assert.ok(exp.s.dead > 0, "the AuxK path must run");
      });
    }
  });
}

Deno.test("cpu-mt: describes its threads and GEMM; bad options are MonobenchErrors", async () => {
  await withMt({ threads: 2, gemm: "ts" }, (mt) => {
    assert.equal(mt.name, "cpu-mt");
    assert.equal(mt.threads, 2);
    assert.match(mt.description, /2 threads, TypeScript kernels, GEMM: TypeScript/);
    assert.equal(mt.wasm, false);
  });
  await withMt({ threads: 3, gemm: "wasm" }, (mt) => {
    assert.equal(mt.gemmKind, "wasm");
    assert.equal(mt.wasm, true);
    assert.match(mt.description, /3 threads, WebAssembly SIMD kernels, GEMM: WebAssembly SIMD \(3 threads\)/);
  });
  await assert.rejects(() => CpuMtBackend.create({ threads: 0 }), /threads must be a positive integer/);
});
