/** Running `reproduce` as a subprocess on a small synthetic manifest (shared by the CLI tests). */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeSyntheticManifest } from "../src/run/synthetic.ts";

export const SCRIPT = new URL("../tasks/reproduce.ts", import.meta.url).pathname;

export function args(manifest: string, out: string, extra: string[] = []): string[] {
  return [
    "--preset",
    "smoke",
    "--grid",
    "eps=1",
    "--backend",
    "cpu",
    "--data",
    manifest,
    "--steps",
    "12",
    "--batch",
    "32",
    "--out",
    out,
    ...extra,
  ];
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export async function cli(a: string[], cwd?: string): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...a],
    stdout: "piped",
    stderr: "piped",
    cwd,
    // As if started from `cwd` (a parent `deno task` would otherwise pass its own INIT_CWD on).
    env: { NO_COLOR: "1", INIT_CWD: cwd ?? Deno.cwd() },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Exit 2, one `monobench:` line matching `re`, no stack trace. */
export function assertBadInput(r: Result, re: RegExp, what: string): void {
  assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("monobench: "));
  assert.equal(lines.length, 1, `${what}: one error line\n${r.stderr}`);
  assert.match(lines[0], re, what);
  assert.doesNotMatch(r.stderr, /\n\s+at |unexpected error/, `${what}: no stack trace`);
}

export async function withTmp(f: (dir: string, manifest: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mb-cli-" });
  try {
    await f(dir, await writeSyntheticManifest(join(dir, "data")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
