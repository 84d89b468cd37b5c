/**
 * A small JSON Schema (Draft 2020-12) validator for the subset monobench's schemas use:
 * `type` (incl. "integer" and type lists), `enum`, `const`, `properties`, `required`,
 * `additionalProperties`, `propertyNames`, `items`, `prefixItems`, `minItems`, `maxItems`,
 * `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `pattern`,
 * `anyOf`, `oneOf`, `allOf`, `$ref` (local `#/…` pointers and other registered schemas by `$id`)
 * and `$defs`. Annotations (`$schema`, `$id`, `$comment`, `title`, `description`, `format`,
 * `default`, `examples`) are ignored. Any other keyword is refused when a schema is registered,
 * so a schema never silently means less than it says.
 */
import { MonobenchError } from "./errors.ts";

export type JsonSchema = boolean | { [k: string]: unknown };

const KEYWORDS = new Set([
  "type",
  "enum",
  "const",
  "properties",
  "required",
  "additionalProperties",
  "propertyNames",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minimum",
  "maximum",
  "exclusiveMinimum",
  "exclusiveMaximum",
  "minLength",
  "pattern",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
  "$defs",
]);
const ANNOTATIONS = new Set([
  "$schema",
  "$id",
  "$comment",
  "title",
  "description",
  "format",
  "default",
  "examples",
]);

/** One violation: JSON pointer of the value and what is wrong. */
export interface SchemaError {
  path: string;
  message: string;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function describe(v: unknown): string {
  const t = typeOf(v);
  if (t === "object") return "an object";
  if (t === "array") return "an array";
  if (t === "null") return "null";
  const s = JSON.stringify(v);
  return `${t} ${s && s.length > 40 ? s.slice(0, 40) + "…" : s}`;
}

function matchesType(v: unknown, t: string): boolean {
  switch (t) {
    case "integer":
      return typeof v === "number" && Number.isInteger(v);
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    default:
      return typeOf(v) === t;
  }
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeOf(a) !== typeOf(b) || typeof a !== "object" || a === null) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a as object), kb = Object.keys(b as object);
  return ka.length === kb.length &&
    ka.every((k) => deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

const esc = (k: string) => k.replace(/~/g, "~0").replace(/\//g, "~1");

/** A set of schemas that may refer to each other by `$id`. */
export class SchemaRegistry {
  private readonly byId = new Map<string, JsonSchema>();

  /** Register a schema under its `$id` (checked for unsupported keywords). */
  add(schema: JsonSchema): this {
    if (typeof schema !== "object" || typeof schema.$id !== "string") {
      throw new MonobenchError("schema registry: a registered schema needs a string $id");
    }
    this.checkKeywords(schema, schema.$id);
    this.byId.set(schema.$id, schema);
    return this;
  }

  private checkKeywords(s: unknown, at: string): void {
    if (typeof s === "boolean") return;
    if (typeof s !== "object" || s === null || Array.isArray(s)) {
      throw new MonobenchError(`schema ${at}: a schema must be an object or a boolean`);
    }
    for (const [k, v] of Object.entries(s)) {
      if (ANNOTATIONS.has(k)) continue;
      if (!KEYWORDS.has(k)) throw new MonobenchError(`schema ${at}: unsupported keyword "${k}"`);
      if (k === "properties" || k === "$defs") {
        for (const [p, sub] of Object.entries(v as object)) this.checkKeywords(sub, `${at}/${k}/${p}`);
      } else if (k === "items" || k === "additionalProperties" || k === "propertyNames") {
        this.checkKeywords(v, `${at}/${k}`);
      } else if (k === "prefixItems" || k === "anyOf" || k === "oneOf" || k === "allOf") {
        (v as unknown[]).forEach((sub, i) => this.checkKeywords(sub, `${at}/${k}/${i}`));
      }
    }
  }

  private resolveRef(ref: string, base: string): { schema: JsonSchema; base: string } {
    const hash = ref.indexOf("#");
    const id = hash < 0 ? ref : ref.slice(0, hash);
    const pointer = hash < 0 ? "" : ref.slice(hash + 1);
    const docId = id === "" ? base : id;
    const doc = this.byId.get(docId);
    if (doc === undefined) throw new MonobenchError(`schema: unresolved $ref "${ref}" (from ${base})`);
    let cur: unknown = doc;
    for (const part of pointer.split("/").filter((p) => p !== "")) {
      const key = part.replace(/~1/g, "/").replace(/~0/g, "~");
      cur = (cur as Record<string, unknown> | undefined)?.[key];
    }
    if (cur === undefined) throw new MonobenchError(`schema: unresolved $ref "${ref}" (from ${base})`);
    return { schema: cur as JsonSchema, base: docId };
  }

  /** Violations of `value` against the registered schema `id` (empty = valid). */
  validate(id: string, value: unknown, maxErrors = 20): SchemaError[] {
    const errors: SchemaError[] = [];
    const { schema, base } = this.resolveRef(id, id);
    this.walk(schema, value, "", base, errors, maxErrors);
    return errors;
  }

  private walk(
    s: JsonSchema,
    v: unknown,
    path: string,
    base: string,
    errors: SchemaError[],
    max: number,
  ): void {
    if (errors.length >= max) return;
    const fail = (message: string, at = path) => errors.push({ path: at || "/", message });
    if (s === true) return;
    if (s === false) return void fail("no value is allowed here");
    if (typeof s.$ref === "string") {
      const r = this.resolveRef(s.$ref, base);
      this.walk(r.schema, v, path, r.base, errors, max);
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type as string[] : [s.type as string];
      if (!types.some((t) => matchesType(v, t))) {
        return void fail(`expected ${types.join(" or ")}, got ${describe(v)}`);
      }
    }
    if (Array.isArray(s.enum) && !s.enum.some((e) => deepEqual(e, v))) {
      return void fail(
        `expected one of ${s.enum.map((e) => JSON.stringify(e)).join(", ")}, got ${describe(v)}`,
      );
    }
    if ("const" in s && !deepEqual(s.const, v)) {
      return void fail(`expected ${JSON.stringify(s.const)}, got ${describe(v)}`);
    }
    if (typeof v === "number") {
      if (typeof s.minimum === "number" && v < s.minimum) fail(`${v} is below the minimum ${s.minimum}`);
      if (typeof s.maximum === "number" && v > s.maximum) fail(`${v} is above the maximum ${s.maximum}`);
      if (typeof s.exclusiveMinimum === "number" && v <= s.exclusiveMinimum) {
        fail(`${v} must be > ${s.exclusiveMinimum}`);
      }
      if (typeof s.exclusiveMaximum === "number" && v >= s.exclusiveMaximum) {
        fail(`${v} must be < ${s.exclusiveMaximum}`);
      }
    }
    if (typeof v === "string") {
      if (typeof s.minLength === "number" && [...v].length < s.minLength) {
        fail(`string shorter than ${s.minLength}`);
      }
      if (typeof s.pattern === "string" && !new RegExp(s.pattern, "u").test(v)) {
        fail(`${describe(v)} does not match ${s.pattern}`);
      }
    }
    if (Array.isArray(v)) {
      if (typeof s.minItems === "number" && v.length < s.minItems) fail(`fewer than ${s.minItems} items`);
      if (typeof s.maxItems === "number" && v.length > s.maxItems) fail(`more than ${s.maxItems} items`);
      const prefix = Array.isArray(s.prefixItems) ? s.prefixItems as JsonSchema[] : [];
      v.forEach((item, i) => {
        const sub = i < prefix.length ? prefix[i] : s.items as JsonSchema | undefined;
        if (sub !== undefined) this.walk(sub, item, `${path}/${i}`, base, errors, max);
      });
    }
    if (typeOf(v) === "object") {
      const o = v as Record<string, unknown>;
      const props = (s.properties ?? {}) as Record<string, JsonSchema>;
      for (const r of (s.required ?? []) as string[]) {
        if (!(r in o)) fail(`missing required property "${r}"`);
      }
      for (const [k, x] of Object.entries(o)) {
        const at = `${path}/${esc(k)}`;
        if (s.propertyNames !== undefined) this.walk(s.propertyNames as JsonSchema, k, at, base, errors, max);
        if (k in props) this.walk(props[k], x, at, base, errors, max);
        else if (s.additionalProperties === false) fail(`unknown property "${k}"`, at);
        else if (typeof s.additionalProperties === "object") {
          this.walk(s.additionalProperties as JsonSchema, x, at, base, errors, max);
        }
      }
    }
    if (Array.isArray(s.allOf)) { for (const sub of s.allOf) this.walk(sub, v, path, base, errors, max); }
    if (Array.isArray(s.anyOf) || Array.isArray(s.oneOf)) {
      const list = (s.anyOf ?? s.oneOf) as JsonSchema[];
      let ok = 0;
      let first: SchemaError[] | null = null;
      for (const sub of list) {
        const e: SchemaError[] = [];
        this.walk(sub, v, path, base, e, max);
        if (e.length === 0) ok++;
        else first ??= e;
      }
      if (s.anyOf && ok === 0) errors.push(...(first ?? []).slice(0, max - errors.length));
      if (s.oneOf && ok !== 1) {
        if (ok === 0) errors.push(...(first ?? []).slice(0, max - errors.length));
        else fail(`matches ${ok} alternatives of oneOf, expected exactly one`);
      }
    }
  }
}

/** Throw a MonobenchError listing the first violations (for `what`, e.g. a file path). */
export function assertValid(registry: SchemaRegistry, id: string, value: unknown, what: string): void {
  const errors = registry.validate(id, value, 5);
  if (errors.length === 0) return;
  const list = errors.map((e) => `${e.path}: ${e.message}`).join("; ");
  throw new MonobenchError(`${what} does not match ${id}: ${list}`);
}
