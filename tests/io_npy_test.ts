import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeNpy, parseNpyHeader, readNpyHeader, readNpyInto } from "../src/io/npy.ts";
import { MonobenchError } from "../src/util/errors.ts";

// ---- hand-built .npy files, per the format spec (numpy lib/format.py) --------------------------

/** Header dict text as numpy writes it. */
function dictText(descr: string, fortran: boolean, shape: number[]): string {
  const sh = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  return `{'descr': '${descr}', 'fortran_order': ${fortran ? "True" : "False"}, 'shape': ${sh}, }`;
}

/**
 * Bytes of a .npy file: magic, version, header length (uint16 LE for 1.0, uint32 LE for 2.0 /
 * 3.0), the header text padded with spaces and a final newline so that the data starts at a
 * multiple of 64, then `data`.
 */
function npyBytes(
  header: string | Uint8Array,
  data: Uint8Array,
  opts: { major?: number; minor?: number; hlenDelta?: number; pad?: boolean } = {},
): Uint8Array {
  const major = opts.major ?? 1, minor = opts.minor ?? 0;
  const pre = major === 1 ? 10 : 12;
  let h = typeof header === "string" ? new TextEncoder().encode(header) : header;
  if (opts.pad !== false) {
    const total = Math.ceil((pre + h.length + 1) / 64) * 64;
    const padded = new Uint8Array(total - pre).fill(0x20);
    padded.set(h);
    padded[padded.length - 1] = 0x0a;
    h = padded;
  }
  const out = new Uint8Array(pre + h.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, major, minor]);
  const dv = new DataView(out.buffer);
  const hlen = h.length + (opts.hlenDelta ?? 0);
  if (major === 1) dv.setUint16(8, hlen, true);
  else dv.setUint32(8, hlen, true);
  out.set(h, pre);
  out.set(data, pre + h.length);
  return out;
}

/** The test matrix [3, 2]: values exactly representable in float16. */
const M = [[1, -2], [0.5, 1.5], [-0.25, 65504]];
const F16_BITS: Record<number, number> = {
  1: 0x3c00,
  [-2]: 0xc000,
  0.5: 0x3800,
  1.5: 0x3e00,
  [-0.25]: 0xb400,
  65504: 0x7bff,
};

function values(order: "C" | "F", m: number[][] = M): number[] {
  const n = m.length, d = m[0].length;
  const out: number[] = [];
  if (order === "C") { for (const row of m) out.push(...row); }
  else for (let c = 0; c < d; c++) for (let r = 0; r < n; r++) out.push(m[r][c]);
  return out;
}

function encode(descr: "<f4" | "<f2" | "<f8", vals: number[]): Uint8Array {
  const size = { "<f4": 4, "<f2": 2, "<f8": 8 }[descr];
  const b = new Uint8Array(vals.length * size);
  const dv = new DataView(b.buffer);
  vals.forEach((v, i) => {
    if (descr === "<f4") dv.setFloat32(i * 4, v, true);
    else if (descr === "<f8") dv.setFloat64(i * 8, v, true);
    else {
      const bits = Number.isNaN(v) ? 0x7e00 : v === Infinity ? 0x7c00 : F16_BITS[v];
      assert.ok(bits !== undefined, `no f16 bits for ${v}`);
      dv.setUint16(i * 2, bits, true);
    }
  });
  return b;
}

const mbErr = (...res: RegExp[]) => (e: unknown) => {
  assert.ok(e instanceof MonobenchError, `expected MonobenchError, got ${e}`);
  for (const re of res) assert.match(e.message, re);
  return true;
};

async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "monobench-npy-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---- tests --------------------------------------------------------------------------------------

Deno.test("npy: every dtype × order × header version decodes to the same C-order float32 matrix", async () => {
  const want = Float32Array.from(values("C"));
  await withTmp(async (dir) => {
    for (const major of [1, 2, 3]) {
      for (const descr of ["<f4", "<f2", "<f8"] as const) {
        for (const order of ["C", "F"] as const) {
          const label = `v${major} ${descr} ${order}`;
          const bytes = npyBytes(dictText(descr, order === "F", [3, 2]), encode(descr, values(order)), {
            major,
          });
          const { info, data } = decodeNpy(bytes, label);
          assert.equal(info.version, `${major}.0`, label);
          assert.equal(info.descr, descr, label);
          assert.equal(info.fortran, order === "F", label);
          assert.deepEqual(info.shape, [3, 2], label);
          assert.equal(info.dataOffset % 64, 0, label);
          assert.deepEqual(data, want, label);
          // Streaming reader, into the middle of a larger output, with chunk sizes that split
          // values' runs across reads (and, for Fortran order, columns across chunks).
          const path = join(dir, `${major}-${descr.slice(1)}-${order}.npy`);
          await Deno.writeFile(path, bytes);
          const h = await readNpyHeader(path);
          assert.deepEqual(h, { ...info, what: path }, label);
          for (const chunkBytes of [1, 8, 1 << 20]) {
            const out = new Float32Array(5 * 2).fill(7);
            await readNpyInto(path, h, out, 1, { chunkBytes });
            assert.deepEqual(Array.from(out), [7, 7, ...want, 7, 7], `${label} chunk ${chunkBytes}`);
          }
        }
      }
    }
  });
});

Deno.test("npy: header spelling variants numpy (or Python 2 numpy) may write are accepted", () => {
  const data = encode("<f4", values("C"));
  for (
    const h of [
      `{"descr": "<f4", "fortran_order": False, "shape": (3, 2)}`,
      `{'shape': (3,2), 'fortran_order': False, 'descr': '<f4'}`,
      `{'descr': '<f4', 'fortran_order': False, 'shape': (3L, 2L), }`,
      `  {'descr':'<f4','fortran_order':False,'shape':(3,2,),}  `,
    ]
  ) {
    assert.deepEqual(decodeNpy(npyBytes(h, data)).data, Float32Array.from(values("C")), h);
  }
  // Unpadded header (data not 64-aligned) is fine too.
  const un = npyBytes(dictText("<f4", false, [3, 2]) + "\n", data, { pad: false });
  assert.deepEqual(decodeNpy(un).data, Float32Array.from(values("C")));
  // float16 subnormals and float64 values that round to float32.
  const sub = new Uint8Array([0x01, 0x00, 0x00, 0x80]); // 2^-24, -0
  assert.deepEqual(Array.from(decodeNpy(npyBytes(dictText("<f2", false, [1, 2]), sub)).data), [2 ** -24, -0]);
  const f8 = encode("<f8", [0.1, 1 / 3]);
  assert.deepEqual(
    decodeNpy(npyBytes(dictText("<f8", false, [2, 1]), f8)).data,
    Float32Array.from([0.1, 1 / 3]),
  );
});

Deno.test("npy: malformed headers are rejected naming the file and the problem", () => {
  const data = encode("<f4", values("C"));
  const ok = dictText("<f4", false, [3, 2]);
  const bad = (bytes: Uint8Array, ...res: RegExp[]) =>
    assert.throws(() => decodeNpy(bytes, "x.npy"), mbErr(/^x\.npy: /, ...res));
  bad(new TextEncoder().encode("1,2,3\n4,5,6\n"), /not a \.npy file/);
  bad(new Uint8Array([0x93, 0x4e, 0x55]), /not a \.npy file/);
  bad(npyBytes(ok, data, { major: 4 }), /unsupported \.npy format version 4\.0/);
  bad(npyBytes(ok, data, { major: 1, minor: 1 }), /version 1\.1/);
  bad(npyBytes(ok, data, { hlenDelta: 10_000 }), /truncated \.npy header/);
  bad(npyBytes("[1, 2, 3]", data), /not a dictionary/);
  bad(
    npyBytes(`{'descr': '<f4', 'shape': (3, 2)}`, data),
    /expected the keys 'descr', 'fortran_order', 'shape'/,
  );
  bad(npyBytes(`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'x': 1}`, data), /keys/);
  bad(
    npyBytes(`{'descr': '<f4', 'fortran_order': 'no', 'shape': (3, 2)}`, data),
    /'fortran_order' is not True/,
  );
  bad(npyBytes(`{'descr': '<f4', 'fortran_order': False, 'shape': [3, 2]}`, data), /'shape' is not a tuple/);
  bad(npyBytes(`{'descr': '<f4', 'fortran_order': False, 'shape': (3, -2)}`, data), /'shape' is not a tuple/);
  bad(npyBytes(`{'descr': '<f4, 'fortran_order': False}`, data), /malformed \.npy header/);
  bad(npyBytes(`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2)} junk`, data), /unexpected text/);
  bad(npyBytes(`{'descr': '<f4', 'descr': '<f4', 'shape': (3, 2)}`, data), /duplicate key/);
  bad(npyBytes(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), data, { major: 3 }), /not valid UTF-8/);
});

Deno.test("npy: unsupported dtypes and shapes are rejected with a hint", () => {
  const d24 = new Uint8Array(24);
  const cases: [string, string, number[], RegExp][] = [
    [">f4", "big-endian", [3, 2], /dtype '>f4' \(big-endian float32\)/],
    ["<i4", "int", [3, 2], /dtype '<i4' \(int32\); supported: '<f4'/],
    ["|b1", "bool", [3, 8], /dtype '\|b1' \(bool8\)/],
    ["<c8", "complex", [3, 1], /complex64/],
    ["|O", "object", [3, 1], /object/],
  ];
  for (const [descr, , shape, re] of cases) {
    assert.throws(
      () => decodeNpy(npyBytes(dictText(descr, false, shape), d24), "f.npy"),
      (e: unknown) => mbErr(re)(e) && /astype\(numpy\.float32\)/.test((e as MonobenchError).hint ?? ""),
    );
  }
  const structured = `{'descr': [('a', '<f4'), ('b', '<f4')], 'fortran_order': False, 'shape': (3,), }`;
  assert.throws(() => decodeNpy(npyBytes(structured, d24), "f.npy"), mbErr(/structured \(record\) dtype/));
  const shapeErr = (shape: number[], re: RegExp, hint: RegExp) =>
    assert.throws(
      () => decodeNpy(npyBytes(dictText("<f4", false, shape), new Uint8Array(24)), "s.npy"),
      (e: unknown) => mbErr(re)(e) && hint.test((e as MonobenchError).hint ?? ""),
    );
  shapeErr([6], /expected a 2-D array \[N, D\].*got shape \(6,\)/, /reshape\(-1, 1\)/);
  shapeErr([1, 3, 2], /got shape \(1, 3, 2\)/, /CLS token/);
  assert.throws(
    () => decodeNpy(npyBytes(dictText("<f4", false, [0, 4]), new Uint8Array(0)), "e.npy"),
    mbErr(/empty array of shape \(0, 4\)/),
  );
});

Deno.test("npy: truncated or over-long data and non-finite values are rejected", async () => {
  const hdr = dictText("<f4", false, [3, 2]);
  const data = encode("<f4", values("C"));
  assert.throws(
    () => decodeNpy(npyBytes(hdr, data.subarray(0, 20)), "t.npy"),
    mbErr(/^t\.npy: truncated data: shape \(3, 2\) <f4 needs 24 bytes after the header, the file has 20/),
  );
  const twice = new Uint8Array([...npyBytes(hdr, data), ...npyBytes(hdr, data)]);
  assert.throws(
    () => decodeNpy(twice, "t.npy"),
    mbErr(/unexpected bytes after the array data/, /more than one/),
  );
  // NaN / Inf, reported at (row, column) of the file — also in Fortran order and float16.
  const nan = values("C");
  nan[3] = NaN; // row 1, column 1
  assert.throws(
    () => decodeNpy(npyBytes(hdr, encode("<f4", nan)), "n.npy"),
    mbErr(/^n\.npy: non-finite value NaN at row 1, column 1/),
  );
  const infF = values("F");
  infF[2] = Infinity; // Fortran element 2 = row 2, column 0
  const f16 = npyBytes(dictText("<f2", true, [3, 2]), encode("<f2", infF));
  assert.throws(() => decodeNpy(f16, "i.npy"), mbErr(/non-finite value Infinity at row 2, column 0/));
  const big = npyBytes(dictText("<f8", false, [1, 2]), encode("<f8", [1, 1e300]));
  assert.throws(() => decodeNpy(big, "b.npy"), mbErr(/1e\+300 .*beyond the float32 range/));
  await withTmp(async (dir) => {
    const p = join(dir, "short.npy");
    await Deno.writeFile(p, npyBytes(hdr, data.subarray(0, 23)));
    await assert.rejects(readNpyHeader(p), mbErr(/short\.npy: truncated data/));
    await Deno.writeFile(p, npyBytes(hdr, encode("<f4", nan)));
    const h = await readNpyHeader(p);
    await assert.rejects(
      readNpyInto(p, h, new Float32Array(6), 0),
      mbErr(/short\.npy: non-finite value NaN at row 1/),
    );
    const bp = join(dir, "big.npy");
    await Deno.writeFile(bp, big);
    await assert.rejects(
      readNpyInto(bp, await readNpyHeader(bp), new Float32Array(2), 0, { chunkBytes: 8 }),
      mbErr(/big\.npy: float64 value 1e\+300 at row 0, column 1 is beyond the float32 range/),
    );
    await assert.rejects(readNpyHeader(join(dir, "missing.npy")), mbErr(/cannot open .*missing\.npy/));
    await Deno.writeFile(join(dir, "empty.npy"), new Uint8Array(0));
    await assert.rejects(readNpyHeader(join(dir, "empty.npy")), mbErr(/not a \.npy file/));
  });
  // parseNpyHeader checks against the real file size, not the bytes it was handed.
  assert.throws(() => parseNpyHeader(npyBytes(hdr, data), 200, "p.npy"), mbErr(/unexpected bytes/));
});
