/**
 * BatchTopK SAE (Bussmann et al.; dictionary_learning `BatchTopKSAE` as vendored by the paper's
 * code). Training keeps the top K·B post-ReLU values over the whole batch; inference uses the
 * single scalar EMA threshold: `f · (f > threshold)` (threshold −1 until the first update).
 */
import type { SaeVariant } from "./types.ts";
import { batchTopKActivation, batchTopKCapacity, linearInitDecoder, thresholdActivation } from "./common.ts";

export const batchTopK: SaeVariant = {
  name: "batchtopk",
  description: "BatchTopK SAE (top K·B activations per batch; scalar EMA threshold at inference)",
  architecture: "jumprelu",
  defaults: { k: 20, auxkAlpha: 0.03, groupFractions: [1] },
  tracksThreshold: true,
  groups: (cfg) => [cfg.width],
  reconWeights: () => [1],
  initDecoder: linearInitDecoder,
  trainCapacity: (cfg, rows) => batchTopKCapacity(cfg.k, rows, cfg.width),
  trainActivation: (a) => batchTopKActivation(a, a.cfg.k),
  inferenceCapacity: (cfg, rows, useThreshold) =>
    useThreshold ? rows * cfg.width : batchTopKCapacity(cfg.k, rows, cfg.width),
  inferenceActivation: (a) => a.useThreshold ? thresholdActivation(a) : batchTopKActivation(a, a.cfg.k),
};
