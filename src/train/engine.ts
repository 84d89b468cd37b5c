/**
 * Device-side SAE training state and one training step, written only against the
 * {@link Backend} contract (every op is enqueued; nothing here waits except the `read*` methods).
 * {@link SaeEngine} runs a fused variant on the fused ops ({@link FusedEngine}, the fast path)
 * and a tape-based architecture on the primitives (`ModelEngine`, model_engine.ts).
 *
 * One fused step (docs/REFERENCE.md "Training step"; dictionary_learning BatchTopK/Matryoshka trainers):
 *   pre = ReLU(W_enc(x − b_dec) + b_enc); f = variant activation(pre) (e.g. batch top-K·B)
 *   [threshold EMA of min positive f, when enabled]; dead-latent counters updated from f
 *   x̂_g = b_dec + Σ_{latents < m_g} f W_dec (nested prefixes g); L = Σ_g w_g mean_b ||x − x̂_g||²
 *   [+ penalty, e.g. L1]; AuxK: top-k_aux dead pre-activations per sample reconstruct the detached
 *   residual x − x̂_{G−1} with W_dec only, α·||e − ê||²/||e − ē||²
 *   backward → project W_dec grads ⟂ rows → clip global norm → Adam → unit W_dec rows.
 */
import type { Backend, Codes, CodesT, Tensor } from "../backend/types.ts";
import { type FusedSaeVariant, isModelVariant, type SaeConfig, type SaeVariant } from "../sae/types.ts";
import { ModelEngine } from "./model_engine.ts";
import { check } from "../util/errors.ts";
import type { Rng } from "../util/rng.ts";

/** Slots of the f32 stats tensor. */
export const STAT_LOSS = 0, STAT_AUX = 1, STAT_DEAD = 2, STAT_GNORM = 3, STAT_PENALTY = 4;
export const N_STATS = 8;

/** Training-space weights on the host, row-major [ω, d] matrices. */
export interface HostWeights {
  Wenc: Float32Array;
  benc: Float32Array;
  Wdec: Float32Array;
  bdec: Float32Array;
  /** The other parameters of a tape-based architecture, by name. */
  extra?: Record<string, Float32Array>;
}

/**
 * The reference trainer's initial weights: W_dec from the variant, W_enc its copy (tied init),
 * zero biases.
 */
export function initialWeights(
  variant: { initDecoder(cfg: SaeConfig, rng: Rng): Float32Array },
  cfg: SaeConfig,
  rng: Rng,
): HostWeights {
  const Wdec = variant.initDecoder(cfg, rng);
  check(
    Wdec.length === cfg.width * cfg.d,
    `variant ${cfg.variant}: initDecoder returned ${Wdec.length} values`,
  );
  return { Wenc: Wdec.slice(), benc: new Float32Array(cfg.width), Wdec, bdec: new Float32Array(cfg.d) };
}

/** Adam moments, dead-latent counters and threshold (the rest of the resumable state). */
export interface HostOptState {
  m: HostWeights;
  v: HostWeights;
  counter: Float32Array;
  threshold: number;
}

export interface StepStats {
  /** Weighted reconstruction loss Σ_g w_g L_g. */
  loss: number;
  /** α · AuxK (as computed; the trainer reports 0 when no latent is dead). */
  aux: number;
  /** Dead latents after this step's counter update. */
  dead: number;
  /** Squared global gradient norm before clipping. */
  gradNormSq: number;
  /** Sparsity penalty (e.g. λ·mean ||f||₁), 0 if the variant has none. */
  penalty: number;
}

export interface OptimHyper {
  lr: number;
  /** 1-based Adam step. */
  step: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global grad-norm clip (≤ 0: no clipping). */
  maxNorm: number;
}

export interface ForwardOptions {
  /** Update the scalar inference-threshold EMA (variants that track one). */
  updateThreshold: boolean;
  /** Run the AuxK path (some latent can be dead). */
  auxk: boolean;
  /** 0-based step and total steps, for architectures whose loss depends on them. */
  step?: number;
  steps?: number;
}

/** What the trainer needs of an engine (implemented by the fused and the tape-based engines). */
export interface TrainEngine {
  setBdec(bdec: Float32Array): void;
  forwardBackward(x: Float32Array, rows: number, opts: ForwardOptions): void;
  optimizerStep(hp: OptimHyper): void;
  readStats(): Promise<StepStats>;
  readWeights(): Promise<HostWeights>;
  readGrads(): Promise<HostWeights>;
  readThreshold(): Promise<number>;
  readOptState(): Promise<HostOptState>;
  dispose(): void;
}

/** The engine of any registered variant: fused ops for fused variants, the tape for models. */
export class SaeEngine implements TrainEngine {
  private readonly impl: TrainEngine;
  constructor(
    readonly backend: Backend,
    readonly variant: SaeVariant,
    readonly cfg: SaeConfig,
    w: HostWeights,
    opt: HostOptState | null = null,
  ) {
    this.impl = isModelVariant(variant)
      ? new ModelEngine(backend, variant, cfg, w, opt)
      : new FusedEngine(backend, variant, cfg, w, opt);
  }
  setBdec(bdec: Float32Array): void {
    this.impl.setBdec(bdec);
  }
  forwardBackward(x: Float32Array, rows: number, opts: ForwardOptions): void {
    this.impl.forwardBackward(x, rows, opts);
  }
  optimizerStep(hp: OptimHyper): void {
    this.impl.optimizerStep(hp);
  }
  readStats(): Promise<StepStats> {
    return this.impl.readStats();
  }
  readWeights(): Promise<HostWeights> {
    return this.impl.readWeights();
  }
  readGrads(): Promise<HostWeights> {
    return this.impl.readGrads();
  }
  readThreshold(): Promise<number> {
    return this.impl.readThreshold();
  }
  readOptState(): Promise<HostOptState> {
    return this.impl.readOptState();
  }
  dispose(): void {
    this.impl.dispose();
  }
}

interface AuxBuffers {
  codes: Codes;
  codesT: CodesT;
  thr: Tensor;
  recon: Tensor;
  gradS: Tensor;
  gradVal: Tensor;
}

interface BatchBuffers {
  rows: number;
  x: Tensor;
  pre: Tensor;
  codes: Codes;
  codesT: CodesT;
  scratch: Tensor;
  xhat: Tensor;
  gradS: Tensor;
  gradVal: Tensor;
  aux: AuxBuffers | null;
}

const PARAMS = ["Wenc", "benc", "Wdec", "bdec"] as const;
type ParamName = typeof PARAMS[number];

/** Engine of a fused variant: the built-in encoder, decoder, losses and AuxK as fused ops. */
export class FusedEngine implements TrainEngine {
  readonly p: Record<ParamName, Tensor>;
  readonly g: Record<ParamName, Tensor>;
  readonly m: Record<ParamName, Tensor>;
  readonly v: Record<ParamName, Tensor>;
  /** f32 [ω] samples since each latent last fired. */
  readonly counter: Tensor;
  /** u32 [ω] 1 = dead. */
  readonly deadMask: Tensor;
  /** f32 [1] inference threshold (training units). */
  readonly threshold: Tensor;
  /** f32 [8] per-step scalars, see STAT_*. */
  readonly stats: Tensor;
  readonly groups: number[];
  readonly weights: number[];
  /** k_aux upper bound: floor(d/2) (reference `top_k_aux`). */
  readonly kAux: number;
  private readonly bufs = new Map<number, BatchBuffers>();

  constructor(
    readonly backend: Backend,
    readonly variant: FusedSaeVariant,
    readonly cfg: SaeConfig,
    w: HostWeights,
    opt: HostOptState | null = null,
  ) {
    const { d, width } = cfg;
    const shapes: Record<ParamName, number[]> = {
      Wenc: [width, d],
      benc: [width],
      Wdec: [width, d],
      bdec: [d],
    };
    const mk = (src: HostWeights | null) =>
      Object.fromEntries(
        PARAMS.map((n) => [n, src ? backend.tensor(src[n], shapes[n]) : backend.zeros(shapes[n])]),
      ) as Record<ParamName, Tensor>;
    this.p = mk(w);
    this.g = mk(null);
    this.m = mk(opt?.m ?? null);
    this.v = mk(opt?.v ?? null);
    this.counter = opt ? backend.tensor(opt.counter, [width]) : backend.zeros([width]);
    this.deadMask = backend.zeros([width], "u32");
    this.threshold = backend.tensor(new Float32Array([opt ? opt.threshold : -1]), [1]);
    this.stats = backend.zeros([N_STATS]);
    this.groups = variant.groups(cfg);
    this.weights = variant.reconWeights(cfg);
    this.kAux = Math.min(Math.floor(d / 2), width);
  }

  /** Overwrite b_dec (geometric-median init). */
  setBdec(bdec: Float32Array): void {
    this.backend.write(this.p.bdec, bdec);
  }

  private buffers(rows: number, withAux: boolean): BatchBuffers {
    const { backend: be, cfg, variant } = this;
    const { d, width } = cfg, G = this.groups.length;
    let b = this.bufs.get(rows);
    if (!b) {
      const cap = variant.trainCapacity(cfg, rows);
      b = {
        rows,
        x: be.zeros([rows, d]),
        pre: be.zeros([rows, width]),
        codes: be.codes(rows, width, cap),
        codesT: be.codesT(rows, width, cap),
        scratch: be.zeros([rows]),
        xhat: be.zeros([G, rows, d]),
        gradS: be.zeros([G, rows, d]),
        gradVal: be.zeros([Math.max(cap, 1)]),
        aux: null,
      };
      this.bufs.set(rows, b);
    }
    if (withAux && !b.aux) {
      // Ties at a row's k_aux-th value are all kept: one spare entry per row.
      const cap = Math.min(rows * (this.kAux + 1), rows * width);
      b.aux = {
        codes: be.codes(rows, width, cap),
        codesT: be.codesT(rows, width, cap),
        thr: be.zeros([rows]),
        recon: be.zeros([1, rows, d]),
        gradS: be.zeros([1, rows, d]),
        gradVal: be.zeros([Math.max(cap, 1)]),
      };
    }
    return b;
  }

  /**
   * Enqueue forward and backward of one batch `x` (host, normalised, [rows, d]). Gradients end
   * up in `g`. `auxk`: run the AuxK path (its loss and gradients are exactly zero when no latent
   * is dead, so the caller may skip it while no latent can be dead yet).
   */
  forwardBackward(x: Float32Array, rows: number, opts: ForwardOptions): void {
    const { backend: be, cfg, variant, p, g, groups } = this;
    const auxk = opts.auxk && cfg.auxkAlpha > 0 && this.kAux > 0;
    const b = this.buffers(rows, auxk);
    be.write(b.x, x);
    be.fill(this.stats, 0);
    be.encode(b.x, p.Wenc, p.benc, p.bdec, b.pre);
    variant.trainActivation({ backend: be, cfg, rows, pre: b.pre, out: b.codes, scratch: b.scratch });
    be.transpose(b.codes, b.codesT);
    if (opts.updateThreshold && variant.tracksThreshold) {
      be.thresholdEma(b.codes, this.threshold, 0, cfg.thresholdBeta);
    }
    be.decode(b.codes, p.Wdec, p.bdec, groups, b.xhat);
    be.reconLossGrad(b.xhat, b.x, this.weights, b.gradS, this.stats, STAT_LOSS);
    be.updateDead(b.codesT, this.counter, cfg.deadAfterTokens, this.deadMask, this.stats, STAT_DEAD);
    be.decodeBackward(b.codes, b.gradS, p.Wdec, groups, b.gradVal, false);
    variant.penalty?.({
      backend: be,
      cfg,
      rows,
      codes: b.codes,
      gradVal: b.gradVal,
      stats: this.stats,
      slot: STAT_PENALTY,
    });
    be.fill(g.Wenc, 0);
    be.fill(g.benc, 0);
    be.fill(g.Wdec, 0);
    be.latentGrads(b.codes, b.codesT, b.gradVal, b.x, p.bdec, b.gradS, groups, g.Wenc, g.benc, g.Wdec);
    be.bdecGrad(b.codes, b.gradVal, p.Wenc, b.gradS, true, g.bdec, false);
    if (auxk) {
      const a = b.aux!, all = [cfg.width];
      // Rows with fewer than kAux dead latents get −Inf: all their (positive) dead values are
      // kept, i.e. k_aux = min(d/2, #dead) exactly, with no host round trip for #dead.
      be.kthLargestRows(b.pre, this.kAux, this.deadMask, a.thr);
      be.gather(b.pre, { kind: "rows", t: a.thr }, this.deadMask, false, a.codes);
      be.transpose(a.codes, a.codesT);
      be.decode(a.codes, p.Wdec, null, all, a.recon);
      be.auxLossGrad(b.x, b.xhat, a.recon, cfg.auxkAlpha, a.gradS, this.stats, STAT_AUX);
      be.decodeBackward(a.codes, a.gradS, p.Wdec, all, a.gradVal, false);
      be.latentGrads(a.codes, a.codesT, a.gradVal, b.x, p.bdec, a.gradS, all, g.Wenc, g.benc, g.Wdec);
      be.bdecGrad(a.codes, a.gradVal, p.Wenc, a.gradS, false, g.bdec, true);
    }
  }

  /** Enqueue the optimiser step: decoder-grad projection, clip, Adam, decoder renormalisation. */
  optimizerStep(hp: OptimHyper): void {
    const { backend: be, p, g, m, v } = this;
    be.projectDecoderGrad(p.Wdec, g.Wdec);
    be.sumSquares(PARAMS.map((n) => g[n]), this.stats, STAT_GNORM);
    const clip = hp.maxNorm > 0 ? { normSq: this.stats, slot: STAT_GNORM, maxNorm: hp.maxNorm } : null;
    const ap = { lr: hp.lr, beta1: hp.beta1, beta2: hp.beta2, eps: hp.eps, step: hp.step };
    for (const n of PARAMS) be.adam(p[n], g[n], m[n], v[n], ap, clip);
    be.renormRows(p.Wdec);
  }

  /** Read the stats of the last step (waits for queued work). */
  async readStats(): Promise<StepStats> {
    const s = await this.backend.read(this.stats) as Float32Array;
    return {
      loss: s[STAT_LOSS],
      aux: s[STAT_AUX],
      dead: s[STAT_DEAD],
      gradNormSq: s[STAT_GNORM],
      penalty: s[STAT_PENALTY],
    };
  }

  private async readSet(set: Record<ParamName, Tensor>): Promise<HostWeights> {
    const out: Partial<HostWeights> = {};
    for (const n of PARAMS) out[n] = await this.backend.read(set[n]) as Float32Array;
    return out as HostWeights;
  }

  /** Training-space weights. */
  readWeights(): Promise<HostWeights> {
    return this.readSet(this.p);
  }

  /** Current gradients (after `forwardBackward`, before `optimizerStep`). */
  readGrads(): Promise<HostWeights> {
    return this.readSet(this.g);
  }

  async readThreshold(): Promise<number> {
    return (await this.backend.read(this.threshold) as Float32Array)[0];
  }

  async readOptState(): Promise<HostOptState> {
    return {
      m: await this.readSet(this.m),
      v: await this.readSet(this.v),
      counter: await this.backend.read(this.counter) as Float32Array,
      threshold: await this.readThreshold(),
    };
  }

  /** Release every device tensor. */
  dispose(): void {
    const be = this.backend;
    for (const set of [this.p, this.g, this.m, this.v]) for (const n of PARAMS) be.dispose(set[n]);
    for (const t of [this.counter, this.deadMask, this.threshold, this.stats]) be.dispose(t);
    for (const b of this.bufs.values()) {
      for (const t of [b.x, b.pre, b.scratch, b.xhat, b.gradS, b.gradVal]) be.dispose(t);
      be.disposeCodes(b.codes);
      be.disposeCodes(b.codesT);
      if (b.aux) {
        for (const t of [b.aux.thr, b.aux.recon, b.aux.gradS, b.aux.gradVal]) be.dispose(t);
        be.disposeCodes(b.aux.codes);
        be.disposeCodes(b.aux.codesT);
      }
    }
    this.bufs.clear();
  }
}
