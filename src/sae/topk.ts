/**
 * Per-sample TopK SAE (Gao et al.; dictionary_learning `AutoEncoderTopK`): every sample keeps its
 * K largest post-ReLU values, at training and at inference (SAELens architecture "topk"). No
 * inference threshold is tracked.
 */
import type { SaeVariant } from "./types.ts";
import { linearInitDecoder, rowTopKActivation } from "./common.ts";

export const topK: SaeVariant = {
  name: "topk",
  description: "TopK SAE (K largest activations per sample, at training and inference)",
  architecture: "topk",
  defaults: { k: 20, auxkAlpha: 0.03, groupFractions: [1] },
  tracksThreshold: false,
  groups: (cfg) => [cfg.width],
  reconWeights: () => [1],
  initDecoder: linearInitDecoder,
  trainCapacity: (cfg, rows) => Math.min(rows * (cfg.k + 1), rows * cfg.width),
  trainActivation: (a) => rowTopKActivation(a, a.cfg.k),
  inferenceCapacity: (cfg, rows) => Math.min(rows * (cfg.k + 1), rows * cfg.width),
  inferenceActivation: (a) => rowTopKActivation(a, a.cfg.k),
};
