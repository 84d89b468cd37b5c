/**
 * The shared WebAssembly memory of the cpu-mt backend (src/backend/wasm/heap.ts): its allocator
 * against a hand-kept model of the live blocks, and tensors that live in it.
 */
import assert from "node:assert/strict";
import { WasmHeap } from "../src/backend/wasm/heap.ts";
import { CpuMtBackend } from "../src/backend/mt.ts";
import { Rng } from "../src/util/rng.ts";

const heap = WasmHeap.get();

Deno.test({
  name: "wasm heap: blocks are aligned, disjoint, reused after release and coalesced",
  ignore: !heap,
  fn() {
    const h = heap!;
    const rng = new Rng(7);
    const live = new Map<number, number>();
    const used0 = h.used;
    for (let i = 0; i < 400; i++) {
      if (live.size > 0 && rng.next() < 0.45) {
        const offs = [...live.keys()];
        const off = offs[rng.int(offs.length)];
        h.release(off);
        h.release(off); // a second release is ignored
        live.delete(off);
        continue;
      }
      const bytes = 1 + rng.int(rng.next() < 0.1 ? 1 << 20 : 4096);
      const b = h.alloc(bytes)!;
      assert.ok(b, "allocation failed");
      assert.equal(b.off % 64, 0, "64-byte aligned");
      for (const [o, n] of live) assert.ok(b.off + bytes <= o || o + n <= b.off, "blocks overlap");
      live.set(b.off, bytes);
    }
    for (const off of live.keys()) h.release(off);
    assert.equal(h.used, used0, "everything released");
    // Everything released coalesces: one block as large as all of them fits at the lowest offset.
    const a = h.alloc(1 << 20)!, b = h.alloc(1 << 20)!;
    h.release(a.off);
    h.release(b.off);
    const c = h.alloc(2 << 20)!;
    assert.equal(c.off, Math.min(a.off, b.off));
    h.release(c.off);
  },
});

Deno.test({
  name: "wasm heap: cpu-mt tensors live in it, come back zeroed after reuse, survive growth",
  ignore: !heap,
  async fn() {
    const be = await CpuMtBackend.create({ threads: 2, gemm: "wasm" });
    try {
      const t = be.tensor(new Float32Array(1000).fill(3), [10, 100]);
      be.dispose(t);
      const z = be.zeros([10, 100]);
      assert.deepEqual(await be.read(z), new Float32Array(1000), "reused block is zeroed");
      const u = be.zeros([7], "u32");
      assert.ok((await be.read(u)) instanceof Uint32Array);
      // Grow the memory by a large block; earlier tensors keep their contents.
      be.write(z, new Float32Array(1000).fill(-2));
      const big = be.zeros([64, 1 << 16]);
      be.fill(big, 1);
      assert.deepEqual(await be.read(z), new Float32Array(1000).fill(-2));
      const s = be.zeros([1]);
      be.sumSquares([big], s, 0);
      assert.equal((await be.read(s))[0], 64 * (1 << 16));
      for (const x of [z, u, big, s]) be.dispose(x);
    } finally {
      be.destroy();
    }
  },
});
