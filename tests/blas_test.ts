import assert from "node:assert/strict";
import { BlasBackend, type GemmProvider, openBlas } from "../src/backend/blas.ts";
import { MlasGemm, mlasProvider } from "../src/backend/mlas.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { Rng } from "../src/util/rng.ts";

const available = openBlas() !== null;
const mlas = MlasGemm.tryCreate(2);

/** GEMM libraries to run the dense-block paths on: OpenBLAS when present, MLAS (onnxruntime) always. */
const PROVIDERS: [string, () => GemmProvider | undefined][] = [
  ["openblas", () => undefined],
  ["mlas", () => mlasProvider(mlas!)],
];

for (const [lib, provider] of PROVIDERS) {
  Deno.test({
    name: `blas (${lib}): encode matches the CPU oracle (awkward shapes, negative pre-activations)`,
    ignore: lib === "openblas" ? !available : mlas === null,
    fn: async () => {
      const blas = new BlasBackend(provider()), cpu = new CpuBackend();
      const rng = new Rng(11);
      for (const [B, d, w] of [[1, 3, 5], [7, 13, 29], [64, 96, 384], [33, 17, 1]]) {
        const x = rng.normals(B * d),
          W = rng.normals(w * d, 0.3),
          be = rng.normals(w, 0.1),
          bd = rng.normals(d, 0.2);
        const run = async (b: CpuBackend) => {
          const pre = b.zeros([B, w]);
          b.encode(b.tensor(x, [B, d]), b.tensor(W, [w, d]), b.tensor(be, [w]), b.tensor(bd, [d]), pre);
          return await b.read(pre) as Float32Array;
        };
        const got = await run(blas), exp = await run(cpu);
        let zeros = 0;
        for (let i = 0; i < exp.length; i++) {
          assert.ok(
            Math.abs(got[i] - exp[i]) <= 1e-4 * (1 + Math.abs(exp[i])),
            `B=${B} d=${d} w=${w} i=${i}`,
          );
          assert.ok(got[i] >= 0);
          if (exp[i] === 0) zeros++;
        }
        if (B * w > 100) assert.ok(zeros > 0, "ReLU must clip some outputs");
      }
    },
  });
}

Deno.test({
  name: "blas: identifies itself; selection ops are the reference implementation",
  ignore: !available,
  fn: () => {
    const blas = new BlasBackend();
    assert.equal(blas.name, "blas");
    assert.match(blas.description, /OpenBLAS/);
    assert.equal(blas.kthLargest, CpuBackend.prototype.kthLargest);
    assert.equal(blas.adam, CpuBackend.prototype.adam);
  },
});

/** Random CSR codes with `perRow` entries per row among the first `used` of `cols` latents. */
function randomCodes(be: CpuBackend, rng: Rng, rows: number, cols: number, used: number, perRow: number) {
  const c = be.codes(rows, cols, rows * perRow);
  const rp = new Uint32Array(rows + 1),
    idx = new Uint32Array(rows * perRow),
    val = new Float32Array(rows * perRow);
  let e = 0;
  for (let b = 0; b < rows; b++) {
    const pick = new Set<number>();
    const want = rng.int(perRow + 1);
    while (pick.size < want) pick.add(rng.int(used));
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

for (const [lib, provider] of PROVIDERS) {
  Deno.test({
    name: `blas (${lib}): dense-block decode / decodeBackward / latentGrads / bdecGrad match the oracle`,
    ignore: lib === "openblas" ? !available : mlas === null,
    fn: async () => {
      const rng = new Rng(5);
      // Dense enough for the BLAS path (and one sparse case that falls back), Matryoshka groups too.
      for (
        const [B, d, w, used, perRow, groups] of [
          [300, 19, 96, 60, 30, [6, 18, 42, 96]],
          [257, 33, 128, 128, 40, [128]],
          [200, 16, 4096, 4096, 25, [4096]],
        ] as [number, number, number, number, number, number[]][]
      ) {
        const blas = new BlasBackend(provider()), cpu = new CpuBackend();
        const G = groups.length;
        const Wdec = rng.normals(w * d),
          Wenc = rng.normals(w * d),
          bdec = rng.normals(d),
          x = rng.normals(B * d);
        const gS = rng.normals(G * B * d);
        const results: Float32Array[][] = [];
        for (const be of [blas, cpu]) {
          const codes = randomCodes(be, new Rng(99), B, w, used, perRow);
          const codesT = be.codesT(B, w, codes.cap);
          be.transpose(codes, codesT);
          const out = be.zeros([G, B, d]);
          be.decode(codes, be.tensor(Wdec, [w, d]), be.tensor(bdec, [d]), groups, out);
          const gv = be.tensor(new Float32Array(codes.cap).fill(0.5), [codes.cap]);
          const gradS = be.tensor(gS, [G, B, d]);
          be.decodeBackward(codes, gradS, be.tensor(Wdec, [w, d]), groups, gv, true);
          const gWe = be.tensor(new Float32Array(w * d).fill(0.25), [w, d]);
          const gbe = be.zeros([w]), gWd = be.zeros([w, d]), gb = be.tensor(new Float32Array(d).fill(1), [d]);
          be.latentGrads(
            codes,
            codesT,
            gv,
            be.tensor(x, [B, d]),
            be.tensor(bdec, [d]),
            gradS,
            groups,
            gWe,
            gbe,
            gWd,
          );
          be.bdecGrad(codes, gv, be.tensor(Wenc, [w, d]), gradS, true, gb, true);
          results.push(
            await Promise.all([out, gv, gWe, gbe, gWd, gb].map((t) => be.read(t) as Promise<Float32Array>)),
          );
        }
        const names = ["decode", "decodeBackward", "gradWenc", "gradBenc", "gradWdec", "bdecGrad"];
        for (let t = 0; t < names.length; t++) {
          const [got, exp] = [results[0][t], results[1][t]];
          let scale = 0;
          for (const v of exp) scale = Math.max(scale, Math.abs(v));
          for (let i = 0; i < exp.length; i++) {
            assert.ok(
              Math.abs(got[i] - exp[i]) <= 1e-4 * (1 + scale),
              `${names[t]} B=${B} w=${w} i=${i}: ${got[i]} vs ${exp[i]}`,
            );
          }
        }
      }
    },
  });
}
