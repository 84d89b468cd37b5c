/**
 * Example of a user-added SAE variant: Matryoshka-TopK — the Matryoshka nested-prefix loss with a
 * per-sample TopK activation (instead of BatchTopK), at training and at inference.
 *
 * Use it in a run:
 *   deno task reproduce --sae-module examples/matryoshka_topk.ts --sae matryoshka-topk \
 *     --grid "layers=last eps=1,4"
 * or from code: `import "./examples/matryoshka_topk.ts"` before `trainSae(..., { variant: "matryoshka-topk" })`.
 */
import {
  groupBounds,
  kaimingInitDecoder,
  MATRYOSHKA_FRACTIONS,
  registerSae,
  rowTopKActivation,
  type SaeVariant,
} from "../mod.ts";

export const matryoshkaTopK: SaeVariant = {
  name: "matryoshka-topk",
  description: "Matryoshka SAE with a per-sample TopK activation (example user variant)",
  architecture: "topk",
  defaults: { k: 20, auxkAlpha: 0.03, groupFractions: [...MATRYOSHKA_FRACTIONS], lossWeighting: "paper" },
  tracksThreshold: false,
  validate: (cfg) => void groupBounds(cfg.groupFractions, cfg.width),
  groups: (cfg) => groupBounds(cfg.groupFractions, cfg.width),
  reconWeights: (cfg) => new Array(cfg.groupFractions.length).fill(1),
  initDecoder: kaimingInitDecoder,
  trainCapacity: (cfg, rows) => Math.min(rows * (cfg.k + 1), rows * cfg.width),
  trainActivation: (a) => rowTopKActivation(a, a.cfg.k),
  inferenceCapacity: (cfg, rows) => Math.min(rows * (cfg.k + 1), rows * cfg.width),
  inferenceActivation: (a) => rowTopKActivation(a, a.cfg.k),
};

registerSae(matryoshkaTopK);
