/**
 * torch.save reader (src/io/pt.ts, zip.ts, pickle.ts) against files written by real PyTorch
 * (fixtures/torch/make_fixtures.py; expected values from torch itself in tensors/expected.json).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PyDict, unpickle } from "../src/io/pickle.ts";
import { openPt, ptEntries, ptMatrix, readPtFloat, readPtInts, streamPtRows } from "../src/io/pt.ts";
import { crc32 } from "../src/io/zip.ts";
import { MonobenchError } from "../src/util/errors.ts";

const DIR = new URL("../fixtures/torch/tensors/", import.meta.url).pathname;

interface Expected {
  dtype: string;
  shape: number[];
  stride: number[];
  offset: number;
  values: number[];
}
const EXPECTED: Record<string, Record<string, Expected>> = JSON.parse(
  await Deno.readTextFile(join(DIR, "expected.json")),
);

const mbErr = (...res: RegExp[]) => (e: unknown) => {
  assert.ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
  assert.ok(!e.message.includes("\n"), "one-line message");
  for (const re of res) assert.match(`${e.message}\nhint: ${e.hint ?? ""}`, re);
  return true;
};

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-pt-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("pt: every fixture tensor reads exactly as torch wrote it (dtypes, strides, offsets, dicts)", async () => {
  let count = 0;
  for (const [file, tensors] of Object.entries(EXPECTED)) {
    const f = await openPt(join(DIR, file));
    const { tensors: got, other } = ptEntries(f);
    assert.equal(other.size, 0, file);
    assert.deepEqual([...got.keys()].sort(), Object.keys(tensors).sort(), file);
    for (const [key, e] of Object.entries(tensors)) {
      const t = got.get(key)!;
      const label = `${file} [${key}]`;
      // expected.json holds f64.pt's values rounded to float32, as they are read.
      assert.equal(t.dtype, file === "f64.pt" ? "float64" : e.dtype, label);
      assert.deepEqual(t.shape, e.shape, label);
      assert.deepEqual(t.stride, e.stride, label);
      assert.equal(t.offset, e.offset, label);
      const values = e.dtype.startsWith("int") ? await readPtInts(t) : Array.from(await readPtFloat(t));
      assert.deepEqual(values, e.values, label); // float32 values compare exactly
      count++;
    }
  }
  assert.equal(count, 17);
  // The fixtures do cover what they claim.
  assert.deepEqual(EXPECTED["transposed.pt"][""].stride, [1, 8]);
  assert.equal(EXPECTED["offset.pt"][""].offset, 16);
  const dict = await openPt(join(DIR, "dict.pt"));
  const { tensors } = ptEntries(dict);
  assert.equal(tensors.get("w")!.storage, tensors.get("w_t")!.storage, "views share one storage");
  assert.ok((await openPt(join(DIR, "state_dict.pt"))).root instanceof PyDict);
  assert.equal((await openPt(join(DIR, "torch2.pt"))).archive, "archive");
  assert.equal((await openPt(join(DIR, "f32.pt"))).version, "3");
});

Deno.test("pt: rows stream in blocks (contiguous and strided) and equal the whole read", async () => {
  for (
    const file of ["f32.pt", "transposed.pt", "offset.pt", "f16.pt", "bf16.pt", "deflated.pt", "zip64.pt"]
  ) {
    const t = ptMatrix(await openPt(join(DIR, file)));
    const whole = await readPtFloat(t);
    for (const block of [1, 2, 5, 1000]) {
      const got = new Float32Array(whole.length);
      const firsts: number[] = [];
      await streamPtRows(t, block, (rows, first, count) => {
        assert.equal(rows.length, count * t.shape[1]);
        got.set(rows, first * t.shape[1]);
        firsts.push(first);
        return Promise.resolve();
      });
      assert.deepEqual(got, whole, `${file} block ${block}`);
      assert.equal(firsts.length, Math.ceil(t.shape[0] / Math.min(block, t.shape[0])));
    }
  }
});

Deno.test("pt: refused inputs give one-line errors naming the file and a way out", async () => {
  const p = (f: string) => join(DIR, f);
  await assert.rejects(
    openPt(p("legacy.pt")),
    mbErr(/legacy\.pt: legacy \(pre-1\.6, non-ZIP\)/, /torch\.save/),
  );
  await assert.rejects(openPt(p("bigendian.pt")), mbErr(/byteorder "big"/, /little-endian/));
  await assert.rejects(openPt(p("torchscript.pt")), mbErr(/TorchScript archive/, /state_dict/));
  await assert.rejects(openPt(p("numpy_named.pt")), mbErr(/NumPy \.npy file/, /rename it/));
  // A pickled global other than the tensor machinery is refused before anything is built.
  await assert.rejects(openPt(p("global.pt")), mbErr(/refusing to load Python object __builtin__\.print/));
  const nan = ptMatrix(await openPt(p("nan.pt")));
  await assert.rejects(
    readPtFloat(nan),
    mbErr(/nan\.pt: tensor of shape \[3, 4\] float32: non-finite value NaN at row 1, column 2/),
  );
  await assert.rejects(
    streamPtRows(nan, 1, () => Promise.resolve()),
    mbErr(/non-finite value NaN at row 1, column 2/),
  );
  assert.throws(
    () => ptMatrix({ path: "x.pt", archive: "x", version: null, root: new PyDict() }),
    mbErr(/expected a single tensor/),
  );
  const rank3 = await openPt(p("rank3.pt")), rank1 = await openPt(p("rank1.pt"));
  assert.throws(() => ptMatrix(rank3), mbErr(/shape \[2, 3, 4\].*2-D tensor/, /CLS token/));
  assert.throws(() => ptMatrix(rank1), mbErr(/shape \[9\].*2-D/, /reshape\(-1, 1\)/));
  const ints = ptEntries(await openPt(p("dict.pt"))).tensors;
  await assert.rejects(readPtFloat(ints.get("k")!), mbErr(/int32: expected a floating-point tensor/));
  await assert.rejects(readPtInts(ints.get("w")!), mbErr(/expected an integer tensor/));
  await assert.rejects(openPt(p("missing.pt")), mbErr(/file not found: .*missing\.pt/));

  await withTmp(async (dir) => {
    const good = await Deno.readFile(p("f32.pt"));
    const write = async (name: string, bytes: Uint8Array) => {
      await Deno.writeFile(join(dir, name), bytes);
      return join(dir, name);
    };
    // Truncated: the end-of-directory record is gone, or the data is cut short.
    await assert.rejects(
      openPt(await write("cut.pt", good.subarray(0, good.length - 30))),
      mbErr(/not a complete ZIP archive/),
    );
    await assert.rejects(
      openPt(await write("half.pt", good.subarray(0, 200))),
      mbErr(/not a complete ZIP archive/),
    );
    await assert.rejects(openPt(await write("zero.pt", new Uint8Array(0))), mbErr(/zero\.pt: empty file/));
    await assert.rejects(
      openPt(await write("junk.pt", new TextEncoder().encode("hello world, not torch"))),
      mbErr(/not a torch\.save file \(no ZIP signature\)/),
    );
    await assert.rejects(
      openPt(await write("pickle.pt", new Uint8Array([0x80, 0x04, 0x4b, 0x01, 0x2e]))),
      mbErr(/a plain Python pickle/),
    );
    // One flipped byte in the tensor data: the CRC catches it (whole and streamed reads).
    const t = ptMatrix(await openPt(p("f32.pt")));
    const off = dataStart(good, t.storage.entry.name);
    const flipped = good.slice();
    flipped[off + 5] ^= 0x01;
    const fp = await write("flip.pt", flipped);
    const ft = ptMatrix(await openPt(fp));
    await assert.rejects(readPtFloat(ft), mbErr(/flip\.pt: ZIP entry f32\/data\/0 fails its CRC-32 check/));
    await assert.rejects(streamPtRows(ft, 2, () => Promise.resolve()), mbErr(/fails its CRC-32 check/));
    // A ZIP that is not torch.save output.
    const zip = await Deno.readFile(p("deflated.pt"));
    const renamed = zip.slice();
    for (let i = 0; i + 8 < renamed.length; i++) {
      if (String.fromCharCode(...renamed.subarray(i, i + 8)) === "data.pkl") {
        renamed.set(new TextEncoder().encode("data.pkx"), i);
      }
    }
    await assert.rejects(
      openPt(await write("nopkl.pt", renamed)),
      mbErr(/without a <name>\/data\.pkl record: not a torch\.save file/),
    );
  });
});

Deno.test("pickle: the interpreter refuses what it does not know, and never calls unknown globals", () => {
  const opts = { globals: {}, what: "p" };
  const run = (...b: number[]) => unpickle(new Uint8Array(b), opts);
  assert.deepEqual(run(0x80, 0x02, 0x4b, 0x07, 0x2e), 7);
  assert.throws(() => run(0x80, 0x02, 0x4b), mbErr(/p: the pickle ends early/));
  assert.throws(() => run(0x80, 0x02, 0x2e), mbErr(/stack underflow/));
  assert.throws(() => run(0x80, 0x02, 0x49, 0x2e), mbErr(/unsupported pickle opcode 0x49/));
  assert.throws(() => run(0x80, 0x09, 0x2e), mbErr(/unsupported pickle protocol 9/));
  const g = new TextEncoder().encode("cos\nsystem\n");
  assert.throws(() => run(0x80, 0x02, ...g, 0x2e), mbErr(/refusing to load Python object os\.system/));
  // STACK_GLOBAL (protocol 4) goes through the same table.
  const s = (t: string) => [0x8c, t.length, ...new TextEncoder().encode(t)];
  assert.throws(() => run(0x80, 0x04, ...s("builtins"), ...s("eval"), 0x93, 0x2e), mbErr(/builtins\.eval/));
  assert.throws(() => run(0x80, 0x02, 0x68, 0x05, 0x2e), mbErr(/memo entry 5 is missing/));
  assert.throws(() => run(0x80, 0x02, 0x4b, 0x01, 0x51, 0x2e), mbErr(/unexpected persistent id/));
  // Containers, memo, ints of every width, floats and strings.
  const v = run(
    0x80,
    0x02,
    0x7d,
    0x71,
    0x00,
    0x28,
    ...s("a"),
    0x8a,
    0x02,
    0xff,
    0x7f,
    ...s("b"),
    0x47,
    0x3f,
    0xf8,
    0,
    0,
    0,
    0,
    0,
    0,
    ...s("c"),
    0x5d,
    0x28,
    0x4d,
    0x00,
    0x01,
    0x4a,
    0xff,
    0xff,
    0xff,
    0xff,
    0x65,
    0x75,
    0x2e,
  ) as PyDict;
  assert.deepEqual([...v.map.entries()], [["a", 32767], ["b", 1.5], ["c", [256, -1]]]);
});

Deno.test("zip: CRC-32 is the standard one", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
  const a = new TextEncoder().encode("The quick brown fox jumps over the lazy dog");
  assert.equal(crc32(a), 0x414fa339);
  assert.equal(crc32(a.subarray(13), crc32(a.subarray(0, 13))), 0x414fa339, "incremental");
});

/** Offset of a stored entry's data in a ZIP file (from its local header), for corrupting it. */
function dataStart(zip: Uint8Array, name: string): number {
  const dv = new DataView(zip.buffer, zip.byteOffset);
  const enc = new TextEncoder().encode(name);
  for (let i = 0; i + 30 < zip.length; i++) {
    if (dv.getUint32(i, true) !== 0x04034b50) continue;
    const n = dv.getUint16(i + 26, true), x = dv.getUint16(i + 28, true);
    if (n === enc.length && enc.every((b, j) => zip[i + 30 + j] === b)) return i + 30 + n + x;
  }
  throw new Error(`no local header for ${name}`);
}
