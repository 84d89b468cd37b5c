/** SAE training, checkpoints and inference helpers. */
export { trainSae } from "./trainer.ts";
export type { TrainOptions, TrainProgress, TrainResult } from "./trainer.ts";
export { resolveRunConfig, TRAIN_DEFAULTS } from "./config.ts";
export type { RunConfig, TrainConfig, TrainInput } from "./config.ts";
export { checkSchedule, lrFactor, resolveLr } from "./lr.ts";
export type { LrSpec } from "./lr.ts";
export { geometricMedian } from "./geomedian.ts";
export { BatchOrder, computeNormFactor, DataSource } from "./data.ts";
export type { RowSource, TrainData } from "./data.ts";
export { SaeEngine } from "./engine.ts";
export type { HostOptState, HostWeights, OptimHyper, StepStats } from "./engine.ts";
export {
  checkpointLocation,
  loadSae,
  loadTrainCheckpoint,
  saeLensConfig,
  saveSae,
  saveTrainCheckpoint,
  toRawParams,
} from "./checkpoint.ts";
export type { HistoryEntry, SaeOrigin, TrainCheckpoint } from "./checkpoint.ts";
export { encodeDataset, reconstruct } from "./encode.ts";
export type { EncodeOptions } from "./encode.ts";
export { decodeSafetensors, encodeSafetensors, readSafetensors, writeSafetensors } from "./safetensors.ts";
export type { StData, StDType, StFile, StTensor } from "./safetensors.ts";
export { plantedSparseData, recoveredFraction } from "./synthetic.ts";
export type { PlantedData } from "./synthetic.ts";
