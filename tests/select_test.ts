/** selectBackend: explicit choices, the "auto" fallback, and errors. */
import assert from "node:assert/strict";
import { isSoftwareAdapter, selectBackend } from "../src/backend/select.ts";
import { BlasBackend, openBlas } from "../src/backend/blas.ts";
import { CpuBackend } from "../src/backend/cpu.ts";
import { CpuMtBackend } from "../src/backend/mt.ts";
import { WebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { MonobenchError } from "../src/util/errors.ts";

/** A GPU object without adapters, as on a machine with no (software) driver. */
const noAdapterGpu = { requestAdapter: () => Promise.resolve(null) } as unknown as GPU;
const brokenGpu = { requestAdapter: () => Promise.reject(new Error("driver exploded")) } as unknown as GPU;

async function hasAdapter(): Promise<boolean> {
  try {
    return !!(await (navigator as unknown as { gpu?: GPU }).gpu?.requestAdapter());
  } catch {
    return false;
  }
}
const HAS_GPU = await hasAdapter();

Deno.test("select: cpu", async () => {
  const b = await selectBackend("cpu");
  assert.ok(b instanceof CpuBackend);
  assert.equal(b.name, "cpu");
});

Deno.test("select: without a GPU, auto takes the multi-threaded CPU backend with a one-line notice", async () => {
  for (const gpu of [noAdapterGpu, brokenGpu]) {
    const lines: string[] = [];
    const b = await selectBackend("auto", { gpu, notice: (l) => lines.push(l), allowBlas: false });
    try {
      assert.ok(b instanceof CpuMtBackend);
      assert.equal(b.name, "cpu-mt");
      assert.equal(lines.length, 1);
      assert.ok(!lines[0].includes("\n"));
      assert.match(lines[0], /^note: no GPU: WebGPU unavailable/);
      // The line names the CPU path: threads, kernels and GEMM library.
      assert.match(
        lines[0],
        /cpu-mt backend: CPU, \d+ threads, WebAssembly SIMD kernels, GEMM: (MLAS|WebAssembly SIMD)/,
      );
    } finally {
      b.destroy();
    }
  }
});

Deno.test("select: auto asks Dawn for an adapter only when it may find a GPU", async () => {
  for (const probeDawn of [true, false]) {
    let asked = 0;
    const gpu = { requestAdapter: () => (asked++, Promise.resolve(null)) } as unknown as GPU;
    const lines: string[] = [];
    const b = await selectBackend("auto", { gpu, probeDawn, notice: (l) => lines.push(l), allowBlas: false });
    try {
      assert.equal(b.name, "cpu-mt");
      assert.equal(asked, probeDawn ? 2 : 1, "built-in WebGPU, then Dawn");
      assert.equal(lines.length, 1);
    } finally {
      b.destroy();
    }
  }
});

Deno.test("select: cpu-mt by name, with a thread count", async () => {
  const b = await selectBackend("cpu-mt", { threads: 3, allowBlas: false });
  try {
    assert.ok(b instanceof CpuMtBackend);
    assert.equal(b.threads, 3);
  } finally {
    b.destroy();
  }
});

Deno.test("select: an explicitly requested GPU backend that fails throws MonobenchError", async () => {
  for (const name of ["webgpu", "dawn"] as const) {
    for (const gpu of [noAdapterGpu, brokenGpu]) {
      await assert.rejects(selectBackend(name, { gpu }), (e: unknown) => {
        assert.ok(e instanceof MonobenchError);
        assert.ok(e.hint && e.hint.length > 0, "has a hint");
        return true;
      });
    }
  }
});

Deno.test("select: bad names and options", async () => {
  await assert.rejects(selectBackend("tpu" as "cpu"), MonobenchError);
  await assert.rejects(selectBackend("auto", { maxBindingBytes: 100 }), MonobenchError);
});

Deno.test({
  name: "select: webgpu gives the WebGPU backend when an adapter exists; auto only on a hardware one",
  ignore: !HAS_GPU,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const g = await selectBackend("webgpu");
    assert.ok(g instanceof WebGpuBackend);
    assert.equal(g.name, "webgpu");
    assert.match(g.description, /WebGPU/);
    const t = g.tensor(new Float32Array([1, 2]), [2]);
    assert.deepEqual(await g.read(t), new Float32Array([1, 2]));
    const software = g.software;
    g.destroy();
    const lines: string[] = [];
    const a = await selectBackend("auto", { notice: (l) => lines.push(l), allowBlas: false });
    try {
      if (software) {
        // Never real work on a software adapter (llvmpipe, lavapipe, SwiftShader, WARP, fallback).
        assert.ok(a instanceof CpuMtBackend);
        assert.equal(lines.length, 1);
        assert.match(lines[0], /software adapter/);
      } else {
        assert.ok(a instanceof WebGpuBackend);
        assert.equal(lines.length, 0);
      }
    } finally {
      a.destroy();
    }
  },
});

Deno.test("select: software adapters are recognised", () => {
  assert.ok(
    isSoftwareAdapter("WebGPU (Deno built-in): llvmpipe (LLVM 15.0.6, 256 bits) [fallback/software adapter]"),
  );
  assert.ok(isSoftwareAdapter("Dawn (npm:webgpu): OpenGL version 4.5 (Core Profile) Mesa 22.3.6, llvmpipe"));
  assert.ok(!isSoftwareAdapter("WebGPU (Deno built-in): NVIDIA H100 80GB HBM3, nvidia"));
});

Deno.test({
  name: "select: blas, and auto's CPU path uses OpenBLAS when it loads",
  ignore: openBlas() === null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const b = await selectBackend("blas");
    assert.ok(b instanceof BlasBackend);
    const lines: string[] = [];
    const a = await selectBackend("auto", { gpu: noAdapterGpu, notice: (l) => lines.push(l) });
    assert.ok(a instanceof CpuMtBackend);
    assert.equal(a.gemmKind, "openblas");
    assert.match(lines[0], /GEMM: OpenBLAS/);
    a.destroy();
    if (HAS_GPU) {
      const probe = await selectBackend("webgpu");
      assert.ok(probe instanceof WebGpuBackend);
      const software = probe.software;
      assert.equal(software, isSoftwareAdapter(probe.description));
      probe.destroy();
      const c = await selectBackend("auto", { notice: () => {} });
      assert.equal(c.name, software ? "cpu-mt" : "webgpu");
      c.destroy();
    }
  },
});
