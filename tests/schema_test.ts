/**
 * The small JSON Schema validator (the subset schema/*.schema.json use), the committed schemas,
 * and the CLI error mapping (I/O errors of the environment exit 2, bugs exit 3).
 */
import assert from "node:assert/strict";
import { SCHEMAS } from "../src/run/schemas.ts";
import { runCli } from "../src/util/cli.ts";
import { MonobenchError } from "../src/util/errors.ts";
import { type JsonSchema, SchemaRegistry } from "../src/util/schema.ts";

const doc: JsonSchema = {
  $id: "t.json",
  type: "object",
  required: ["n", "kind"],
  additionalProperties: false,
  properties: {
    n: { type: "integer", minimum: 1, maximum: 9 },
    x: { type: ["number", "null"], exclusiveMinimum: 0 },
    kind: { enum: ["a", "b"] },
    v: { const: 2 },
    tags: { type: "array", items: { type: "string", pattern: "^[a-z]+$" }, minItems: 1, maxItems: 2 },
    pair: { type: "array", prefixItems: [{ type: "number" }, { type: "string" }] },
    map: { type: "object", propertyNames: { pattern: "^k" }, additionalProperties: { $ref: "#/$defs/pos" } },
    lr: { anyOf: [{ enum: ["code"] }, { type: "number" }] },
    one: { oneOf: [{ type: "integer" }, { type: "number", minimum: 0 }] },
    other: { $ref: "u.json#/$defs/name" },
    "a/b": { type: "boolean" },
  },
  $defs: { pos: { type: "number", minimum: 0 } },
};
const other: JsonSchema = { $id: "u.json", $defs: { name: { type: "string", minLength: 2 } } };
const reg = new SchemaRegistry().add(doc).add(other);
const errs = (v: unknown) => reg.validate("t.json", v).map((e) => `${e.path}: ${e.message}`);

Deno.test("schema: each keyword accepts what it should and names what it rejects", () => {
  assert.deepEqual(
    errs({
      n: 3,
      x: null,
      kind: "a",
      v: 2,
      tags: ["ab"],
      pair: [1, "s"],
      map: { k1: 0 },
      lr: "code",
      one: 1.5,
      other: "ok",
      "a/b": true,
    }),
    [],
  );
  const cases: [unknown, string][] = [
    [{ kind: "a" }, '/: missing required property "n"'],
    [{ n: 1.5, kind: "a" }, "/n: expected integer, got number 1.5"],
    [{ n: 0, kind: "a" }, "/n: 0 is below the minimum 1"],
    [{ n: 10, kind: "a" }, "/n: 10 is above the maximum 9"],
    [{ n: 1, kind: "a", x: 0 }, "/x: 0 must be > 0"],
    [{ n: 1, kind: "a", x: "1" }, '/x: expected number or null, got string "1"'],
    [{ n: 1, kind: "c" }, '/kind: expected one of "a", "b", got string "c"'],
    [{ n: 1, kind: "a", v: 3 }, "/v: expected 2, got number 3"],
    [{ n: 1, kind: "a", tags: [] }, "/tags: fewer than 1 items"],
    [{ n: 1, kind: "a", tags: ["a", "b", "c"] }, "/tags: more than 2 items"],
    [{ n: 1, kind: "a", tags: ["A"] }, '/tags/0: string "A" does not match ^[a-z]+$'],
    [{ n: 1, kind: "a", pair: [1, 2] }, "/pair/1: expected string, got number 2"],
    [{ n: 1, kind: "a", map: { k1: -1 } }, "/map/k1: -1 is below the minimum 0"],
    [{ n: 1, kind: "a", map: { z: 1 } }, '/map/z: string "z" does not match ^k'],
    [{ n: 1, kind: "a", lr: "paper" }, '/lr: expected one of "code", got string "paper"'],
    [{ n: 1, kind: "a", one: 2 }, "/one: matches 2 alternatives of oneOf, expected exactly one"],
    [{ n: 1, kind: "a", other: "x" }, "/other: string shorter than 2"],
    [{ n: 1, kind: "a", "a/b": 1 }, "/a~1b: expected boolean, got number 1"],
    [{ n: 1, kind: "a", extra: 1 }, '/extra: unknown property "extra"'],
    [[1], "/: expected object, got an array"],
  ];
  for (const [v, want] of cases) assert.deepEqual(errs(v), [want], JSON.stringify(v));
});

Deno.test("schema: unsupported keywords and dangling refs are refused, never ignored", () => {
  assert.throws(
    () => new SchemaRegistry().add({ $id: "x", type: "object", dependentRequired: {} }),
    /unsupported keyword "dependentRequired"/,
  );
  assert.throws(
    () => new SchemaRegistry().add({ $id: "x", properties: { a: { if: true } } }),
    /x\/properties\/a: unsupported keyword "if"/,
  );
  assert.throws(() => new SchemaRegistry().add({ type: "object" }), /needs a string \$id/);
  const r = new SchemaRegistry().add({ $id: "y", $ref: "#/$defs/missing" });
  assert.throws(() => r.validate("y", 1), /unresolved \$ref "#\/\$defs\/missing"/);
});

Deno.test("schema: the committed schemas use only the supported subset and refer to each other", () => {
  // Registration (at import) checked every keyword; the cross-document refs resolve.
  assert.deepEqual(
    SCHEMAS.validate("report.schema.json#/$defs/stat", { mean: 1, std: null, ci95: [null, null], n: 1 }),
    [],
  );
  assert.equal(
    SCHEMAS.validate("report.schema.json#/$defs/layer", { layer: "a-b", sourceLayer: "", d: 1, ms: [] })
      .length,
    1,
  );
  assert.equal(SCHEMAS.validate("result.schema.json#/$defs/sha256", "ab").length, 1);
});

Deno.test("cli: an environment I/O error exits 2 with one line and a hint; a bug exits 3", async () => {
  const run = async (f: () => never) => {
    const lines: string[] = [];
    const code = await runCli(() => Promise.resolve().then(f), { out: () => {}, err: (l) => lines.push(l) });
    return { code, lines };
  };
  let enospc: Error;
  try {
    Deno.writeFileSync("/dev/full", new Uint8Array(4));
    enospc = Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
  } catch (e) {
    enospc = e as Error;
  }
  const full = await run(() => {
    throw enospc;
  });
  assert.equal(full.code, 2);
  assert.match(full.lines[0], /^monobench: I\/O error: No space left on device/);
  assert.match(full.lines[1], /^hint: free disk space/);
  assert.equal(full.lines.length, 2);
  const bad = await run(() => {
    throw new MonobenchError("bad option", "do this");
  });
  assert.deepEqual(bad, { code: 2, lines: ["monobench: bad option", "hint: do this"] });
  const bug = await run(() => {
    throw new TypeError("x is undefined");
  });
  assert.equal(bug.code, 3);
  assert.match(bug.lines[0], /unexpected error: TypeError/);
});
