/**
 * The JSON Schemas of monobench's outputs (schema/*.schema.json, Draft 2020-12), and the checks
 * applied when a stored file is read back: a cached case result, a stored layer result, a
 * baseline report. Wrong types are errors naming the file and the field, never empty cells.
 */
import reportSchema from "../../schema/report.schema.json" with { type: "json" };
import resultSchema from "../../schema/result.schema.json" with { type: "json" };
import { assertValid, SchemaRegistry } from "../util/schema.ts";

export const RESULT_SCHEMA = "result.schema.json";
export const REPORT_SCHEMA = "report.schema.json";
export const LAYER_SCHEMA = "report.schema.json#/$defs/layer";
export const PROVENANCE_SCHEMA = "result.schema.json#/$defs/provenance";

/** Registry with both schemas. */
export const SCHEMAS: SchemaRegistry = new SchemaRegistry().add(resultSchema).add(reportSchema);

/** Throw a MonobenchError unless `value` (parsed JSON, nulls as written) matches schema `id`. */
export function checkSchema(id: string, value: unknown, what: string): void {
  assertValid(SCHEMAS, id, value, what);
}
