/** SAE variants: types, registry and the built-in variants. */
export type * from "./types.ts";
export { isModelVariant } from "./types.ts";
export { getFusedSae, getSae, listSaes, registerSae } from "./registry.ts";
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
export { auxK, centered, decodeSparse, densePre, mse, preOn, reluPre, selectBatchTopK } from "./model_ops.ts";
export type { AuxKArgs } from "./model_ops.ts";
