/** SAE variants: types, registry and the built-in variants. */
export type * from "./types.ts";
export { getSae, listSaes, registerSae } from "./registry.ts";
export { GENERIC_SAE_DEFAULTS, groupBounds, groupSizes, resolveSaeConfig } from "./config.ts";
export type { SaeConfigInput } from "./config.ts";
export {
  batchTopKActivation,
  batchTopKCapacity,
  kaimingInitDecoder,
  linearInitDecoder,
  reluActivation,
  rowTopKActivation,
  thresholdActivation,
  unitRows,
} from "./common.ts";
export { batchTopK } from "./batchtopk.ts";
export { matryoshka, MATRYOSHKA_FRACTIONS } from "./matryoshka.ts";
export { topK } from "./topk.ts";
export { reluL1 } from "./relu.ts";
