/**
 * The committed WebAssembly module (src/backend/wasm/kernels_wasm.ts) is what its C source
 * (native/wasm/kernels.c) compiles to, checked by a rebuild when the clang it was built with is
 * installed (tools/build_wasm.ts); and it loads and exports every kernel the backend calls.
 */
import assert from "node:assert/strict";
import { buildWasm, clangVersion, generated, OUTPUT } from "../tools/build_wasm.ts";
import { WASM_BASE64, WASM_SHA256 } from "../src/backend/wasm/kernels_wasm.ts";
import { WASM_KERNELS } from "../src/backend/mt_kernels.ts";

const committed = await Deno.readTextFile(OUTPUT);
const builtWith = committed.match(/^\/\/ Built with: (.*)$/m)?.[1] ?? "";
const have = await clangVersion();

Deno.test({
  name: "wasm build: the committed module matches a rebuild of native/wasm/kernels.c",
  ignore: have !== builtWith,
  async fn() {
    const text = await generated(await buildWasm(), have!);
    assert.equal(text, committed, "run `deno task build:wasm` and commit src/backend/wasm/kernels_wasm.ts");
  },
});

Deno.test("wasm build: the module's hash, memory import and exports", async () => {
  const bytes = Uint8Array.from(atob(WASM_BASE64), (c) => c.charCodeAt(0));
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  assert.equal([...h].map((x) => x.toString(16).padStart(2, "0")).join(""), WASM_SHA256);
  const m = new WebAssembly.Module(bytes);
  assert.deepEqual(WebAssembly.Module.imports(m).map((i) => `${i.module}.${i.name}:${i.kind}`), [
    "env.memory:memory",
  ]);
  const exports = new Set(WebAssembly.Module.exports(m).map((e) => e.name));
  const src = await Deno.readTextFile(new URL("../src/backend/mt_kernels.ts", import.meta.url));
  const called = [...src.matchAll(/wk\(\)\.([a-z_0-9]+)\(/g)].map((x) => x[1]);
  assert.ok(called.length >= Object.keys(WASM_KERNELS).length - 1);
  for (const name of called) assert.ok(exports.has(name), `the module exports ${name}`);
});
