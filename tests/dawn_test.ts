/**
 * The Dawn backend (npm:webgpu): it survives garbage collection of everything but its device (the
 * use-after-free of docs/dawn.md), trains like the CPU backend, and the soak task reports runs and
 * crashes. Tests that need Dawn are ignored where it cannot load (no EGL/OpenGL, or a libstdc++
 * older than the package needs).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu.ts";
import { createWebGpuBackend } from "../src/backend/webgpu/backend.ts";
import { acquireDevice, probeAdapter, settleDawn } from "../src/backend/webgpu/device.ts";
import "../src/sae/mod.ts";
import { loadTrainCheckpoint } from "../src/train/checkpoint.ts";
import { trainSae } from "../src/train/trainer.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { compareSteps, main, soakData, soakInput, stepFrom } from "../tasks/soak_dawn.ts";

// Probe without a device: a Dawn device alive when this module's isolate is torn down would
// crash the test process (see settleDawn), e.g. when a filter skips the test that releases it.
async function dawnAvailable(): Promise<boolean> {
  try {
    await probeAdapter("dawn");
    return true;
  } catch (e) {
    if (e instanceof MonobenchError) return false;
    throw e;
  }
}
const noDawn = !(await dawnAvailable());

const ROOT = new URL("..", import.meta.url).pathname;

async function deno(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

function capture() {
  const out: string[] = [], err: string[] = [];
  return { io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) }, out, err };
}

Deno.test({
  name: "dawn: training matches the CPU backend (loss curve, and one step from the trained state)",
  ignore: noDawn,
  sanitizeOps: false,
  sanitizeResources: false,
  // First: a live Dawn device keeps polling the event loop (a busy core), so release it early.
  fn: async () => {
    const c = { gpu: "dawn" as const, steps: 60, d: 16, width: 64, k: 4, batch: 64, seed: 0, syncEvery: 10 };
    const { train } = soakData(c);
    const dir = await Deno.makeTempDir({ prefix: "monobench-dawn-test-" });
    const dawn = await createWebGpuBackend("dawn");
    try {
      // A one-batch dead window: dead latents, and a non-zero AuxK loss, from the first sync on.
      const input = { ...soakInput(c), deadAfterTokens: c.batch };
      const opts = { syncEvery: c.syncEvery, checkpointDir: join(dir, "ck") };
      const g = await trainSae(dawn, train, input, opts);
      const cpuRun = await trainSae(new CpuBackend(), train, input, { syncEvery: c.syncEvery });
      assert.equal(g.history.length, cpuRun.history.length);
      for (let i = 0; i < g.history.length; i++) {
        const a = g.history[i], b = cpuRun.history[i];
        assert.ok(
          Math.abs(a.loss - b.loss) <= 1e-4 * b.loss,
          `loss at step ${a.step}: ${a.loss} vs ${b.loss}`,
        );
        assert.equal(a.dead, b.dead, `dead at step ${a.step}`);
      }
      assert.ok(cpuRun.history.every((h) => h.dead > 0 && h.auxLoss > 0), "AuxK path exercised");
      const ck = await loadTrainCheckpoint(join(dir, "ck"));
      const cmp = compareSteps(await stepFrom(dawn, ck, train), await stepFrom(new CpuBackend(), ck, train));
      assert.ok(cmp.ok, cmp.lines.join("\n"));
    } finally {
      await Deno.remove(dir, { recursive: true });
      dawn.destroy();
      await settleDawn();
    }
  },
});

Deno.test({
  name: "dawn: a device from acquireDevice survives GC of everything else (1000 waited submits)",
  ignore: noDawn,
  fn: async () => {
    // A fresh process with --expose-gc: the device is the only thing the script keeps; without the
    // instance registry of device.ts this dies by SIGSEGV/SIGABRT within 100 submits.
    const r = await deno([
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      "bench/dawn/repro.ts",
      "--child",
      "--cases",
      "gc:mono",
      "--submits",
      "1000",
    ]);
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(-400)}`);
    assert.equal(r.code, 0, r.stderr.slice(-400));
    assert.match(r.stdout, /submits=1000 done/);
  },
});

Deno.test({
  name: "dawn: soak task completes a short run and reports a crash of its child",
  ignore: noDawn,
  fn: async () => {
    // Our own directory: the soak keeps its files after a failure (the crash below) for inspection.
    const dir = await Deno.makeTempDir({ prefix: "monobench-dawn-test-" });
    try {
      const soak = (...args: string[]) =>
        deno(["run", "-A", "tasks/soak_dawn.ts", "--sync-every", "10", ...args]);
      const ok = await soak("--steps", "20", "--dir", join(dir, "ok"));
      assert.equal(ok.code, 0, ok.stdout + ok.stderr.slice(-400));
      const lines = ok.stdout.trim().split("\n");
      assert.match(lines[lines.length - 1], /^steps=20 submits=\d+ crashed=no$/);
      assert.match(ok.stdout, /Dawn vs CPU: match/);
      const bad = await soak("--steps", "40", "--crash-at", "20", "--dir", join(dir, "bad"));
      assert.equal(bad.code, 1);
      const last = bad.stdout.trim().split("\n").pop()!;
      assert.match(last, /^steps=20 submits=\d+ crashed=yes$/);
      assert.match(bad.stdout, /killed by SIGABRT/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("dawn: bad soak options and a bad MONOBENCH_DAWN route are one-line errors", async () => {
  for (const args of [["--steps", "0"], ["--k", "65"], ["--minutes", "abc"], ["--bogus"]]) {
    const cap = capture();
    assert.equal(await main(args, cap.io), 2, args.join(" "));
    assert.match(cap.err[0], /^monobench: /);
    assert.equal(cap.out.length, 0);
  }
  const prev = Deno.env.get("MONOBENCH_DAWN");
  Deno.env.set("MONOBENCH_DAWN", "metal");
  try {
    await assert.rejects(
      acquireDevice("dawn"),
      (e) => e instanceof MonobenchError && /MONOBENCH_DAWN=metal/.test(e.message),
    );
  } finally {
    if (prev === undefined) Deno.env.delete("MONOBENCH_DAWN");
    else Deno.env.set("MONOBENCH_DAWN", prev);
  }
});
