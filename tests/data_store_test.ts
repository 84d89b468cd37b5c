import { deepStrictEqual, equal, notEqual, ok, rejects, throws } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { MonobenchError } from "../src/util/errors.ts";
import { Rng } from "../src/util/rng.ts";
import { F16_MAX, f16BitsToF32, f16ToF32Array, f32ToF16Array, f32ToF16Bits } from "../src/data/f16.ts";
import { ActivationStore, cachedStore, writeStore } from "../src/data/store.ts";

const dirs: string[] = [];
async function tmp(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "monobench-store-" });
  dirs.push(d);
  return d;
}

/** Deno.test that removes the temp directories it created. */
function test(name: string, fn: () => Promise<void> | void): void {
  Deno.test(name, async () => {
    try {
      await fn();
    } finally {
      for (const d of dirs.splice(0)) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  });
}

function randomMatrix(n: number, d: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n * d }, () => rng.normal() * 3);
}

/** Like `rejects`, but checks that a MonobenchError whose message matches `re` is thrown. */
async function rejectsMb(p: Promise<unknown>, re: RegExp): Promise<void> {
  await rejects(p, (e: unknown) => {
    ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
    ok(re.test(e.message), `message ${JSON.stringify(e.message)} does not match ${re}`);
    return true;
  });
}

test("f16: exact conversions at the edges of the format", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65519.99, 0x7bff], // below the rounding midpoint to 2^16
    [65520, 0x7c00], // midpoint: ties to even → overflow to Infinity
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // exactly half the smallest subnormal: ties to even → 0
    [2 ** -25 * 1.5, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units → even (2)
    [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
    [1 + 2 ** -11, 0x3c00], // tie → even mantissa (0)
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even mantissa (2)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
    [2 ** -30, 0x0000],
    [1e-45, 0x0000], // float32 subnormal
  ];
  for (const [x, bits] of cases) {
    equal(f32ToF16Bits(x), bits, `f32ToF16Bits(${x}) = 0x${f32ToF16Bits(x).toString(16)}`);
  }
  ok(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN))));
  equal(f16BitsToF32(0x0001), 2 ** -24);
  equal(f16BitsToF32(0x7bff), F16_MAX);
  equal(f16BitsToF32(0x3555), 0.333251953125);
  equal(Object.is(f16BitsToF32(0x8000), -0), true);
});

test("f16: matches Math.f16round on random values incl. subnormals (when available)", () => {
  const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;
  const rng = new Rng(5);
  const xs = new Float32Array(200000);
  for (let i = 0; i < xs.length; i++) {
    const e = rng.int(50) - 30; // 2^-30 … 2^19
    xs[i] = (rng.next() < 0.5 ? -1 : 1) * (1 + rng.next()) * 2 ** e;
  }
  const bits = f32ToF16Array(xs);
  const back = f16ToF32Array(bits);
  for (let i = 0; i < xs.length; i++) {
    const x = xs[i];
    if (f16round) {
      const want = f16round(x);
      ok(Object.is(back[i], want), `x=${x}: got ${back[i]}, Math.f16round ${want}`);
    } else if (Math.abs(x) <= F16_MAX && Math.abs(x) >= 2 ** -14) {
      ok(Math.abs(back[i] - x) <= Math.abs(x) * 2 ** -11, `x=${x}: got ${back[i]}`);
    }
  }
});

test("store: f32 round trip, shards, rows across shard boundaries, preload on/off", async () => {
  const dir = join(await tmp(), "s");
  const n = 37, d = 5;
  const x = randomMatrix(n, d, 1);
  const h = await writeStore(dir, x, n, d, { shardRows: 8, meta: { note: "hi" } });
  equal(h.shards.length, 5);
  deepStrictEqual(h.shards.map((s) => s.rows), [8, 8, 8, 8, 5]);
  const header = JSON.parse(await Deno.readTextFile(join(dir, "header.json")));
  equal(header.format, "monobench-activations");
  equal(header.version, 1);
  equal(header.dtype, "f32");
  deepStrictEqual(header.meta, { note: "hi" });
  equal((await Deno.stat(join(dir, "shard-00004.bin"))).size, 5 * d * 4);
  for (const preload of [true, false]) {
    const s = await ActivationStore.open(dir, { preload });
    equal(s.n, n);
    equal(s.d, d);
    deepStrictEqual(s.all(), x);
    deepStrictEqual(s.rows(6, 11), x.slice(6 * d, 17 * d)); // spans shards 0, 1, 2
    deepStrictEqual(s.rows(36, 1), x.slice(36 * d));
    equal(s.rows(10, 0).length, 0);
    await s.verify();
  }
  // Little-endian float32 on disk.
  const raw = await Deno.readFile(join(dir, "shard-00000.bin"));
  equal(new DataView(raw.buffer).getFloat32(4, true), x[1]);
});

test("store: f16 round trip equals per-element binary16 rounding; half the bytes", async () => {
  const dir = join(await tmp(), "h");
  const n = 20, d = 7;
  const x = randomMatrix(n, d, 2);
  x[3] = 1e-7; // subnormal in f16
  x[4] = -65504;
  const h = await writeStore(dir, x, n, d, { dtype: "f16", shardRows: 6 });
  equal(h.dtype, "f16");
  equal((await Deno.stat(join(dir, "shard-00000.bin"))).size, 6 * d * 2);
  const s = await ActivationStore.open(dir, { preload: false });
  const want = f16ToF32Array(f32ToF16Array(x));
  deepStrictEqual(s.all(), want);
  deepStrictEqual(s.rows(5, 3), want.slice(5 * d, 8 * d));
  await s.verify();
  await rejectsMb(
    writeStore(join(dir, "..", "o"), Float32Array.of(70000), 1, 1, { dtype: "f16" }),
    /overflows float16/,
  );
});

test("store: content hash covers n, d, dtype and data — not shard layout or meta", async () => {
  const root = await tmp();
  const x = randomMatrix(12, 4, 3);
  const a = await writeStore(join(root, "a"), x, 12, 4, { shardRows: 5, meta: { a: 1 } });
  const b = await writeStore(join(root, "b"), x, 12, 4, { shardRows: 100 });
  equal(a.sha256, b.sha256);
  const want = createHash("sha256").update("monobench-activations v1 n=12 d=4 dtype=f32\n")
    .update(new Uint8Array(x.buffer)).digest("hex");
  equal(a.sha256, want);
  const c = await writeStore(join(root, "c"), x, 6, 8);
  notEqual(c.sha256, a.sha256);
  const y = x.slice();
  y[7] += 1e-3;
  notEqual((await writeStore(join(root, "d"), y, 12, 4)).sha256, a.sha256);
  notEqual((await writeStore(join(root, "e"), x, 12, 4, { dtype: "f16" })).sha256, a.sha256);
});

test("store: corruption, truncation, missing and malformed files give clear errors", async () => {
  const root = await tmp();
  const dir = join(root, "s");
  const x = randomMatrix(10, 3, 4);
  await writeStore(dir, x, 10, 3, { shardRows: 4 });
  // A flipped byte keeps sizes valid; only verify() notices.
  const shard = join(dir, "shard-00001.bin");
  const good = await Deno.readFile(shard);
  const bad = good.slice();
  bad[5] ^= 0x40;
  await Deno.writeFile(shard, bad);
  const s = await ActivationStore.open(dir);
  await rejectsMb(s.verify(), /content hash mismatch/);
  // Truncated shard.
  await Deno.writeFile(shard, good.subarray(0, good.length - 4));
  await rejectsMb(ActivationStore.open(dir), /shard-00001\.bin has 44 bytes, expected 48/);
  // Missing shard.
  await Deno.remove(shard);
  await rejectsMb(ActivationStore.open(dir), /shard-00001\.bin is missing/);
  await Deno.writeFile(shard, good);
  await (await ActivationStore.open(dir)).verify();

  const header = await Deno.readTextFile(join(dir, "header.json"));
  const edit = async (f: (h: Record<string, unknown>) => void) => {
    const h = JSON.parse(header);
    f(h);
    await Deno.writeTextFile(join(dir, "header.json"), JSON.stringify(h));
  };
  await Deno.writeTextFile(join(dir, "header.json"), header.slice(0, 40));
  await rejectsMb(ActivationStore.open(dir), /malformed header\.json/);
  await edit((h) => (h.format = "something-else"));
  await rejectsMb(ActivationStore.open(dir), /format "something-else"/);
  await edit((h) => (h.version = 2));
  await rejectsMb(ActivationStore.open(dir), /unsupported version 2/);
  await edit((h) => (h.n = 11));
  await rejectsMb(ActivationStore.open(dir), /shards hold 10 rows, but n = 11/);
  await edit((h) => (h.dtype = "f64"));
  await rejectsMb(ActivationStore.open(dir), /dtype/);
  await edit((h) => ((h.shards as { file: string }[])[0].file = "../escape.bin"));
  await rejectsMb(ActivationStore.open(dir), /not a plain file name/);
  await Deno.remove(join(dir, "header.json"));
  await rejectsMb(ActivationStore.open(dir), /header\.json is missing/);
  await rejectsMb(ActivationStore.open(join(root, "nope")), /activation store not found/);
});

test("store: bad input is refused; rows() range checks", async () => {
  const root = await tmp();
  const x = randomMatrix(4, 2, 5);
  const nan = x.slice();
  nan[3] = NaN;
  await rejectsMb(writeStore(join(root, "a"), nan, 4, 2), /non-finite value NaN at element 3/);
  const inf = x.slice();
  inf[0] = -Infinity;
  await rejectsMb(writeStore(join(root, "a"), inf, 4, 2), /non-finite/);
  await rejectsMb(writeStore(join(root, "a"), x, 3, 2), /expected n·d/);
  await rejectsMb(writeStore(join(root, "a"), x, 4, 2, { shardRows: 0 }), /shardRows/);
  await rejectsMb(writeStore(join(root, "a"), x, 4, 2, { dtype: "f64" as "f32" }), /unknown dtype/);
  const entries = [];
  for await (const e of Deno.readDir(root)) entries.push(e.name);
  deepStrictEqual(entries, []); // nothing written, no temp dirs left
  await writeStore(join(root, "a"), x, 4, 2);
  const s = await ActivationStore.open(join(root, "a"));
  throws(() => s.rows(3, 2), (e: unknown) => e instanceof MonobenchError && /out of range/.test(e.message));
  throws(() => s.rows(-1, 1), MonobenchError);
  throws(() => s.rows(0.5, 1), MonobenchError);
});

test("store: a failed write leaves the previous store intact (atomic replace)", async () => {
  const root = await tmp();
  const dir = join(root, "s");
  const x = randomMatrix(9, 3, 6);
  const h0 = await writeStore(dir, x, 9, 3, { shardRows: 2 });
  // Fails before anything is written (NaN).
  const y = randomMatrix(9, 3, 7);
  y[0] = NaN;
  await rejects(writeStore(dir, y, 9, 3), MonobenchError);
  // Fails after the new shards were written (meta cannot be serialised).
  const z = randomMatrix(9, 3, 8);
  await rejectsMb(writeStore(dir, z, 9, 3, { meta: { big: 10n } }), /not JSON-serialisable/);
  const s = await ActivationStore.open(dir);
  equal(s.header.sha256, h0.sha256);
  deepStrictEqual(s.all(), x);
  await s.verify();
  const names = [];
  for await (const e of Deno.readDir(root)) names.push(e.name);
  deepStrictEqual(names, ["s"]); // temp directories cleaned up
  // A successful replace swaps the content.
  const h1 = await writeStore(dir, z, 9, 3);
  deepStrictEqual((await ActivationStore.open(dir)).all(), z);
  notEqual(h1.sha256, h0.sha256);
  // Never replaces a directory that is not a store.
  const other = join(root, "results");
  await Deno.mkdir(other);
  await Deno.writeTextFile(join(other, "keep.txt"), "precious");
  await rejectsMb(writeStore(other, z, 9, 3), /not an activation store/);
  equal(await Deno.readTextFile(join(other, "keep.txt")), "precious");
});

test("store: cachedStore computes once, reuses, and rebuilds a broken entry", async () => {
  const root = await tmp();
  let calls = 0;
  const x = randomMatrix(6, 2, 9);
  const produce = () => {
    calls++;
    return { x, n: 6, d: 2, meta: { what: "test" } };
  };
  const key = { a: 1, b: [1, 2], c: { z: 1, y: 2 } };
  const r1 = await cachedStore(root, "thing", key, produce);
  equal(r1.created, true);
  const r2 = await cachedStore(root, "thing", { c: { y: 2, z: 1 }, b: [1, 2], a: 1 }, produce, {
    verify: true,
  });
  equal(r2.created, false);
  equal(r2.store.dir, r1.store.dir);
  equal(calls, 1);
  equal(r2.store.header.meta.what, "test");
  const r3 = await cachedStore(root, "thing", { ...key, a: 2 }, produce);
  equal(r3.created, true);
  notEqual(r3.store.dir, r1.store.dir);
  equal(calls, 2);
  await Deno.remove(join(r1.store.dir, "header.json"));
  const warnings: string[] = [];
  const r4 = await cachedStore(root, "thing", key, produce, { onWarn: (m) => warnings.push(m) });
  equal(r4.created, true);
  equal(calls, 3);
  ok(warnings.length === 1 && /header\.json is missing/.test(warnings[0]));
  deepStrictEqual(r4.store.all(), x);
});

test("store: open({verify}) catches a same-size edit; verify() of a preloaded store checks the bytes it serves", async () => {
  const root = await tmp();
  const dir = join(root, "s");
  const x = randomMatrix(10, 3, 5);
  await writeStore(dir, x, 10, 3, { shardRows: 4 });
  await (await ActivationStore.open(dir, { verify: true })).verify();
  const shard = join(dir, "shard-00000.bin");
  const good = await Deno.readFile(shard);
  const bad = good.slice();
  bad[0] ^= 0x01;
  await Deno.writeFile(shard, bad);
  // Sizes and header are intact, so a plain open succeeds; the content check names the store.
  const lazy = await ActivationStore.open(dir, { preload: false });
  await rejectsMb(lazy.verify(), new RegExp(`activation store ${dir}: content hash mismatch`));
  await rejectsMb(
    ActivationStore.open(dir, { verify: true }),
    /content hash mismatch .*changed or is corrupt/,
  );
  // A store opened before the edit serves (and verifies) the bytes it read then.
  await Deno.writeFile(shard, good);
  const pre = await ActivationStore.open(dir, { preload: true });
  await Deno.writeFile(shard, bad);
  await pre.verify();
  deepStrictEqual(pre.all(), x);
});

test("store: a full disk while writing is a MonobenchError; the previous store stays and no temp is left", async () => {
  const root = await tmp();
  const dir = join(root, "s");
  const x = randomMatrix(10, 3, 6);
  const before = await writeStore(dir, x, 10, 3);
  let enospc: Error | null = null;
  try {
    Deno.writeFileSync("/dev/full", new Uint8Array(4));
  } catch (e) {
    enospc = e as Error;
  }
  if (enospc === null) return; // no /dev/full here
  const realWrite = Deno.writeFile;
  Deno.writeFile = (() => Promise.reject(enospc)) as typeof Deno.writeFile;
  try {
    await rejects(writeStore(dir, randomMatrix(10, 3, 7), 10, 3), (e: unknown) => {
      ok(e instanceof MonobenchError, `got ${e}`);
      ok(/cannot write activation store .*No space left on device/.test(e.message), e.message);
      ok(/free disk space/.test(e.hint ?? ""));
      return true;
    });
  } finally {
    Deno.writeFile = realWrite;
  }
  equal((await ActivationStore.open(dir)).sha256, before.sha256);
  deepStrictEqual([...Deno.readDirSync(root)].map((e) => e.name), ["s"]);
});
