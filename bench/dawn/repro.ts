/**
 * Minimal reproduction of Dawn (npm:webgpu) dying inside Deno, see docs/dawn.md.
 *
 *   deno run -A bench/dawn/repro.ts                       # the whole matrix, one child per case
 *   deno run -A bench/dawn/repro.ts --cases plain:drop    # one case
 *   deno run -A bench/dawn/repro.ts --version 0.6.2       # another npm:webgpu release
 *
 * Every case runs in a child process that counts queue submissions and prints a progress line
 * every 100; the parent reports how far it got and how it ended (exit code or signal, or a
 * timeout). A case is `<variant>:<instance>`:
 *   instance  drop = the GPU object from create() becomes unreachable after requestDevice (what
 *             a script that only keeps the device does); keep = it stays referenced; mono = the
 *             device comes from monobench's acquireDevice (src/backend/webgpu/device.ts).
 *   variant   plain     1 dispatch per submit, one bind group reused, onSubmittedWorkDone / 100
 *             churn     8 dispatches per submit, a fresh bind group per dispatch
 *             map       a mapAsync read-back (checked) every 100 submits
 *             nowait    never waits on the device
 *             batched   512 dispatches per submit (monobench's batching), waits every 10
 *             gc        plain with an explicit gc() every 100 submits (--expose-gc)
 */
import { parseArgs } from "node:util";
import { acquireDevice } from "../../src/backend/webgpu/device.ts";

/** Seconds without a progress line after which a case counts as hung. */
const STALL_S = 30;
const VARIANTS = ["plain", "churn", "map", "nowait", "batched", "gc"] as const;
type Variant = typeof VARIANTS[number];

const { values: a } = parseArgs({
  options: {
    child: { type: "boolean", default: false },
    cases: { type: "string" },
    submits: { type: "string", default: "20000" },
    timeout: { type: "string", default: "180" },
    backend: { type: "string", default: "opengl" },
    /** npm:webgpu version to load instead of the one in deno.json. */
    version: { type: "string" },
  },
});

if (a.child) await child(a.cases!, Number(a.submits), a.backend!);
else await parent();

async function parent(): Promise<void> {
  const cases = a.cases?.split(",") ??
    VARIANTS.flatMap((v) => [`${v}:drop`, `${v}:keep`]);
  const limitS = Number(a.timeout);
  console.log(
    `Dawn submit soak, webgpu ${
      a.version ?? "from deno.json"
    }, backend=${a.backend}, target ${a.submits} submits, ${limitS} s per case`,
  );
  for (const c of cases) {
    const [variant] = c.split(":");
    const flags = variant === "gc" ? ["--v8-flags=--expose-gc"] : [];
    // Another release must not end up in the project's lock file.
    const lock = a.version ? ["--no-lock"] : [];
    const args = ["run", "-A", ...lock, ...flags, import.meta.filename!, "--child", "--cases", c];
    args.push("--submits", a.submits!, "--backend", a.backend!);
    if (a.version) args.push("--version", a.version);
    const proc = new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" }).spawn();
    const t0 = performance.now();
    let reached = 0, lastProgress = t0;
    const state = { killed: "" as "" | "stall" | "limit" };
    const kill = (why: "stall" | "limit") => {
      state.killed = why;
      try {
        proc.kill("SIGKILL");
      } catch { /* already gone */ }
    };
    // No progress line for STALL_S seconds = a hang; still progressing at the limit = alive.
    const timer = setInterval(() => {
      const now = performance.now();
      if (now - lastProgress > STALL_S * 1000) kill("stall");
      else if (now - t0 > limitS * 1000) kill("limit");
    }, 500);
    const readOut = (async () => {
      let buf = "";
      for await (const chunk of proc.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        const lines = buf.split("\n");
        buf = lines.pop()!;
        for (const l of lines) {
          const m = /submits=(\d+)/.exec(l);
          if (m) {
            reached = Number(m[1]);
            lastProgress = performance.now();
          }
        }
      }
    })();
    const [st, err] = await Promise.all([proc.status, new Response(proc.stderr).text(), readOut]);
    clearInterval(timer);
    const ended = state.killed === "stall"
      ? `hang (no progress for ${STALL_S} s)`
      : state.killed === "limit"
      ? "alive at the time limit"
      : st.signal
      ? `killed by ${st.signal}`
      : `exit ${st.code}`;
    const why = err.split("\n").find((l) => /terminate|Assertion|system_error|rror/.test(l))?.trim();
    const s = ((performance.now() - t0) / 1000).toFixed(0);
    console.log(
      `${c.padEnd(14)} submits=${String(reached).padEnd(6)} ${ended}${why ? ` (${why})` : ""} ${s} s`,
    );
  }
}

async function child(c: string, n: number, backend: string): Promise<void> {
  const [variant, instance] = c.split(":") as [Variant, string];
  if (!VARIANTS.includes(variant) || !["drop", "keep", "mono"].includes(instance)) {
    throw new Error(`bad case ${c}`);
  }
  if (!Deno.env.get("EGL_PLATFORM")) Deno.env.set("EGL_PLATFORM", "surfaceless");
  const spec = a.version ? `npm:webgpu@${a.version}` : "webgpu";
  const mod = await import(spec) as unknown as { create: (o: string[]) => GPU };
  const keep: unknown[] = [];
  // In a function so that nothing but `keep` can hold the GPU object.
  const open = async () => {
    const gpu = mod.create(backend === "default" ? [] : [`backend=${backend}`]);
    if (instance === "keep") keep.push(gpu);
    const ro = { featureLevel: "compatibility" } as GPURequestAdapterOptions;
    const adapter = await gpu.requestAdapter(ro);
    if (!adapter) throw new Error("no adapter");
    return await adapter.requestDevice();
  };
  const device = instance === "mono"
    ? (await acquireDevice("dawn", { dawnOptions: [`backend=${backend}`] })).device
    : await open();
  const code = `@group(0) @binding(0) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x < arrayLength(&b)) { b[g.x] = b[g.x] + 1u; }
}`;
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module: device.createShaderModule({ code }), entryPoint: "main" },
  });
  const buf = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const staging = device.createBuffer({
    size: 4096,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const bindGroup = () =>
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: buf } }],
    });
  const fixed = bindGroup();
  const perSubmit = variant === "churn" ? 8 : variant === "batched" ? 512 : 1;
  const waitEvery = variant === "batched" ? 10 : 100;
  const gc = (globalThis as { gc?: () => void }).gc;
  let dispatched = 0;
  for (let s = 1; s <= n; s++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    for (let i = 0; i < perSubmit; i++) {
      pass.setBindGroup(0, variant === "churn" ? bindGroup() : fixed);
      pass.dispatchWorkgroups(16);
    }
    dispatched += perSubmit;
    pass.end();
    const check = variant === "map" && s % waitEvery === 0;
    if (check) enc.copyBufferToBuffer(buf, 0, staging, 0, 4096);
    device.queue.submit([enc.finish()]);
    if (check) {
      await staging.mapAsync(GPUMapMode.READ);
      const v = new Uint32Array(staging.getMappedRange())[0];
      staging.unmap();
      if (v !== dispatched) throw new Error(`wrong result ${v} (expected ${dispatched}) at submit ${s}`);
    } else if (variant !== "nowait" && s % waitEvery === 0) {
      await device.queue.onSubmittedWorkDone();
    }
    if (variant === "gc" && s % 100 === 0) gc?.();
    if (s % 100 === 0) console.log(`submits=${s}`);
  }
  device.destroy();
  console.log(`submits=${n} done`);
  Deno.exit(0);
}
