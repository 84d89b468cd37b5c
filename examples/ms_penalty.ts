/**
 * A BatchTopK SAE trained with a monosemanticity term in its loss, in the spirit of MonoLoss
 * (Nasiri-Sarvi et al. 2026, arXiv 2602.12403), written against the public API only:
 *   L = ||x − x̂||² + AuxK + μ · (1 − mean_{active j} MS_j(batch))
 * where MS_j(batch) is the monosemanticity score of latent j on the training batch with cosine
 * similarities of the batch's own inputs (the SAE input, as MonoLoss does when training SAEs):
 *   e_b = x_b / ||x_b||,  u_j = Σ_b a_bj,  v_j = Σ_b a_bj²,  w_j = Σ_b a_bj e_b,
 *   MS_j = (||w_j||² − v_j) / (u_j² − v_j)   (the pairwise Σ_{b<c} a_b a_c s_bc / Σ_{b<c} a_b a_c),
 * which costs O(nnz·d) per step. A latent is active in the batch when u_j² − v_j > 10⁻⁶ u_j² (at
 * least two samples fire). docs/REFERENCE.md ("An MS penalty in training") lists where this
 * differs from MonoLoss. Everything else (activation, AuxK, scalar threshold EMA, inference,
 * export as SAELens "jumprelu") is BatchTopK.
 *
 *   deno task reproduce --sae-module examples/ms_penalty.ts --sae ms-penalty --grid "layers=last eps=1,4"
 *
 * Option `ms` (μ, default 0.1); μ = 0 trains plain BatchTopK through the tape.
 */
import {
  auxK,
  centered,
  check,
  decodeSparse,
  linearInitDecoder,
  mse,
  preOn,
  registerSae,
  reluPre,
  row,
  type SaeModelVariant,
  selectBatchTopK,
  type Tape,
  type Var,
} from "../mod.ts";

/** μ · (1 − mean MS) of the latents active in the batch; `f` are entries, `x` [rows, d]. */
export function msPenalty(t: Tape, f: Var, x: Var, mu: number): Var {
  const e = t.map("x / max(sqrt(n), 0.00000001)", { x, n: row(t.sum("sq(x)", { x }, "rows")) });
  const u = t.sum("a", { a: f }, "cols");
  const v = t.sum("sq(a)", { a: f }, "cols");
  const q = t.sum("sq(w)", { w: t.spmmT(f, e) }, "rows");
  const on = "sq(u) - v > 0.000001 * sq(u)";
  const ms = t.map(`select(${on}, (q - v) / (sq(u) - v), 0)`, { u, v, q });
  const n = t.sum(on, { u, v });
  return t.map("mu * (1 - s / max(n, 1))", { mu, s: t.sum("m", { m: ms }), n });
}

export const msPenaltySae: SaeModelVariant = {
  kind: "model",
  name: "ms-penalty",
  description: "BatchTopK SAE with a batch monosemanticity penalty μ·(1 − mean MS) (MonoLoss-style)",
  architecture: "jumprelu",
  defaults: { k: 20, auxkAlpha: 0.03, groupFractions: [1], options: { ms: 0.1 } },
  tracksThreshold: true,
  validate: (cfg) => {
    const mu = cfg.options.ms;
    check(typeof mu === "number" && Number.isFinite(mu) && mu >= 0, `ms-penalty: ms must be >= 0, got ${mu}`);
  },
  params: (cfg) => [
    { name: "W_enc", shape: [cfg.width, cfg.d], role: "Wenc", units: "none" },
    { name: "b_enc", shape: [cfg.width], role: "benc", units: "input" },
    { name: "W_dec", shape: [cfg.width, cfg.d], role: "Wdec", units: "none", unitRows: true },
    { name: "b_dec", shape: [cfg.d], role: "bdec", units: "input" },
  ],
  initDecoder: linearInitDecoder,

  forward({ tape: t, cfg, x, p, track, deadMask, auxk, kAux }) {
    const xc = centered(t, x, p.b_dec);
    const pre = reluPre(t, x, p.W_enc, p.b_enc, p.b_dec);
    const codes = selectBatchTopK(t, pre, cfg.k);
    const f = preOn(t, codes, xc, p.W_enc, p.b_enc);
    track(codes, f);
    const xhat = decodeSparse(t, f, p.W_dec, p.b_dec);
    const loss = mse(t, xhat, x);
    const mu = cfg.options.ms as number;
    const penalty = mu > 0 ? msPenalty(t, f, x, mu) : undefined;
    const aux = auxk && cfg.auxkAlpha > 0
      ? auxK(t, {
        pre,
        x,
        xc,
        xhat,
        Wenc: p.W_enc,
        benc: p.b_enc,
        Wdec: p.W_dec,
        deadMask,
        kAux,
        alpha: cfg.auxkAlpha,
      })
      : undefined;
    return { loss, penalty, aux };
  },

  encode({ tape: t, cfg, rows, x, p, threshold, useThreshold }) {
    const pre = reluPre(t, x, p.W_enc, p.b_enc, p.b_dec);
    const codes = useThreshold
      ? t.select(pre, threshold, { cap: rows * cfg.width, strict: true })
      : selectBatchTopK(t, pre, cfg.k);
    return { codes, acts: t.gatherEntries(codes, pre) };
  },

  // SAELens JumpReLU with the scalar threshold on every latent, as the built-in BatchTopK.
  saeLensTensors: (sae) => {
    const { d, width } = sae.cfg;
    const WencT = new Float32Array(d * width);
    for (let j = 0; j < width; j++) for (let i = 0; i < d; i++) WencT[i * width + j] = sae.Wenc[j * d + i];
    return {
      W_enc: { shape: [d, width], data: WencT },
      b_enc: { shape: [width], data: sae.benc },
      W_dec: { shape: [width, d], data: sae.Wdec },
      b_dec: { shape: [d], data: sae.bdec },
      threshold: { shape: [width], data: new Float32Array(width).fill(Math.max(sae.threshold, 0)) },
    };
  },
  fromSaeLens: () => ({}),
};

registerSae(msPenaltySae);
