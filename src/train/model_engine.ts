/**
 * Training engine of tape-based architectures ({@link SaeModelVariant}): the variant's forward
 * pass runs on a {@link Tape}, the tape gives the gradients, and the generic parts are the same as
 * on the fused path (dead-latent counters, scalar threshold EMA, decoder-row constraint on the
 * parameters that declare it, global-norm clipping, Adam).
 */
import type { Backend, Tensor } from "../backend/types.ts";
import { expr } from "../compute/expr.ts";
import { type Pattern, Tape, type Var } from "../compute/tape.ts";
import type { ParamSpec, SaeConfig, SaeModelVariant } from "../sae/types.ts";
import { check, MonobenchError } from "../util/errors.ts";
import type { Rng } from "../util/rng.ts";
import type {
  ForwardOptions,
  HostOptState,
  HostWeights,
  OptimHyper,
  StepStats,
  TrainEngine,
} from "./engine.ts";
import {
  initialWeights,
  N_STATS,
  STAT_AUX,
  STAT_DEAD,
  STAT_GNORM,
  STAT_LOSS,
  STAT_PENALTY,
} from "./engine.ts";

const ROLES = ["Wenc", "benc", "Wdec", "bdec"] as const;

/** The variant's parameters, checked: names unique, every role exactly once with its shape. */
export function modelParams(variant: SaeModelVariant, cfg: SaeConfig): ParamSpec[] {
  const specs = variant.params(cfg);
  const { d, width } = cfg;
  const want = { Wenc: [width, d], benc: [width], Wdec: [width, d], bdec: [d] };
  const names = new Set<string>();
  for (const s of specs) {
    check(
      /^[A-Za-z_][\w.]*$/.test(s.name),
      `variant ${variant.name}: bad parameter name ${JSON.stringify(s.name)}`,
    );
    check(!names.has(s.name), `variant ${variant.name}: parameter ${s.name} declared twice`);
    names.add(s.name);
    check(
      Array.isArray(s.shape) && s.shape.length >= 1 &&
        s.shape.every((n) => Number.isSafeInteger(n) && n >= 1),
      `variant ${variant.name}: parameter ${s.name} has a bad shape ${JSON.stringify(s.shape)}`,
    );
    check(["input", "log-input", "none"].includes(s.units), `variant ${variant.name}: ${s.name}: bad units`);
    check(!s.unitRows || s.shape.length === 2, `variant ${variant.name}: ${s.name}: unitRows needs a matrix`);
  }
  for (const r of ROLES) {
    const hits = specs.filter((s) => s.role === r);
    check(hits.length === 1, `variant ${variant.name}: exactly one parameter must have role ${r}`);
    check(
      JSON.stringify(hits[0].shape) === JSON.stringify(want[r]),
      `variant ${variant.name}: ${hits[0].name} (role ${r}) must have shape [${want[r]}]`,
    );
  }
  return specs;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Initial training-space weights of a model variant (see {@link ParamSpec.init}). */
export function initModelWeights(variant: SaeModelVariant, cfg: SaeConfig, rng: Rng): HostWeights {
  const specs = modelParams(variant, cfg);
  const out: HostWeights = { ...initialWeights(variant, cfg, rng), extra: {} };
  for (const s of specs) {
    let a: Float32Array | null = null;
    if (typeof s.init === "number") a = new Float32Array(size(s.shape)).fill(s.init);
    else if (typeof s.init === "function") {
      a = s.init(cfg, rng);
      check(
        a.length === size(s.shape),
        `variant ${variant.name}: init of ${s.name} returned ${a.length} values`,
      );
    }
    if (s.role) {
      if (a) out[s.role] = a;
    } else out.extra![s.name] = a ?? new Float32Array(size(s.shape));
  }
  return out;
}

/** The host array of parameter `s` in `w` (role field or extra). */
export function hostParam(w: HostWeights, s: ParamSpec, what: string): Float32Array {
  const a = s.role ? w[s.role] : w.extra?.[s.name];
  if (!a || a.length !== size(s.shape)) {
    throw new MonobenchError(`${what}: parameter ${s.name} is missing or has the wrong size`);
  }
  return a;
}

const COPY = expr("v");
const ONE: { kind: "dense"; rows: number; cols: number } = { kind: "dense", rows: 1, cols: 1 };

export class ModelEngine implements TrainEngine {
  readonly specs: ParamSpec[];
  private readonly p = new Map<string, Tensor>();
  private readonly g = new Map<string, Tensor>();
  private readonly m = new Map<string, Tensor>();
  private readonly v = new Map<string, Tensor>();
  readonly counter: Tensor;
  readonly deadMask: Tensor;
  readonly threshold: Tensor;
  readonly stats: Tensor;
  readonly kAux: number;
  private readonly tape: Tape;
  private readonly xs = new Map<number, Tensor>();

  constructor(
    readonly backend: Backend,
    readonly variant: SaeModelVariant,
    readonly cfg: SaeConfig,
    w: HostWeights,
    opt: HostOptState | null = null,
  ) {
    this.specs = modelParams(variant, cfg);
    for (const s of this.specs) {
      this.p.set(s.name, backend.tensor(hostParam(w, s, "initial weights"), s.shape));
      this.g.set(s.name, backend.zeros(s.shape));
      this.m.set(
        s.name,
        opt ? backend.tensor(hostParam(opt.m, s, "Adam state"), s.shape) : backend.zeros(s.shape),
      );
      this.v.set(
        s.name,
        opt ? backend.tensor(hostParam(opt.v, s, "Adam state"), s.shape) : backend.zeros(s.shape),
      );
    }
    const { width, d } = cfg;
    this.counter = opt ? backend.tensor(opt.counter, [width]) : backend.zeros([width]);
    this.deadMask = backend.zeros([width], "u32");
    this.threshold = backend.tensor(new Float32Array([opt ? opt.threshold : -1]), [1]);
    this.stats = backend.zeros([N_STATS]);
    this.kAux = Math.min(Math.floor(d / 2), width);
    this.tape = new Tape(backend);
  }

  private role(r: (typeof ROLES)[number]): Tensor {
    return this.p.get(this.specs.find((s) => s.role === r)!.name)!;
  }

  setBdec(bdec: Float32Array): void {
    this.backend.write(this.role("bdec"), bdec);
  }

  forwardBackward(x: Float32Array, rows: number, opts: ForwardOptions): void {
    const { backend: be, cfg, variant, tape } = this;
    tape.reset();
    let xt = this.xs.get(rows);
    if (!xt) {
      xt = be.zeros([rows, cfg.d]);
      this.xs.set(rows, xt);
    }
    be.write(xt, x);
    be.fill(this.stats, 0);
    const P: Record<string, Var> = {};
    for (const s of this.specs) P[s.name] = tape.param(this.p.get(s.name)!, this.g.get(s.name)!, s.name);
    let tracked = false;
    const track = (codes: Pattern, acts: Var) => {
      if (tracked) throw new MonobenchError(`variant ${variant.name}: forward called track() twice`);
      if (acts.pattern !== codes) {
        throw new MonobenchError(`variant ${variant.name}: track(): acts must be entries of codes`);
      }
      tracked = true;
      be.copy(acts.t, codes.codes.val);
      if (opts.updateThreshold && variant.tracksThreshold) {
        be.thresholdEma(codes.codes, this.threshold, 0, cfg.thresholdBeta);
      }
      be.updateDead(codes.codesT, this.counter, cfg.deadAfterTokens, this.deadMask, this.stats, STAT_DEAD);
    };
    const res = variant.forward({
      tape,
      cfg,
      rows,
      x: tape.input(xt, "x"),
      p: P,
      track,
      deadMask: this.deadMask,
      auxk: opts.auxk && this.kAux > 0,
      kAux: this.kAux,
      step: opts.step ?? 0,
      steps: opts.steps ?? 1,
    });
    if (!tracked) throw new MonobenchError(`variant ${variant.name}: forward must call track(codes, acts)`);
    const terms: [Var | undefined, number][] = [[res.loss, STAT_LOSS], [res.penalty, STAT_PENALTY], [
      res.aux,
      STAT_AUX,
    ]];
    for (const [t] of terms) {
      if (t && t.size !== 1) throw new MonobenchError(`variant ${variant.name}: losses must be [1] scalars`);
    }
    tape.backward(terms.map(([t]) => t).filter((t): t is Var => !!t));
    for (const s of this.specs) if (!P[s.name].gradSet) be.fill(this.g.get(s.name)!, 0);
    for (const [t, slot] of terms) {
      if (t) be.reduce(COPY, { v: { t: t.t, bc: "scalar" } }, ONE, "scalar", this.stats, { slot });
    }
  }

  optimizerStep(hp: OptimHyper): void {
    const { backend: be, specs } = this;
    for (const s of specs) if (s.unitRows) be.projectDecoderGrad(this.p.get(s.name)!, this.g.get(s.name)!);
    be.sumSquares(specs.map((s) => this.g.get(s.name)!), this.stats, STAT_GNORM);
    const clip = hp.maxNorm > 0 ? { normSq: this.stats, slot: STAT_GNORM, maxNorm: hp.maxNorm } : null;
    const ap = { lr: hp.lr, beta1: hp.beta1, beta2: hp.beta2, eps: hp.eps, step: hp.step };
    for (const s of specs) {
      be.adam(this.p.get(s.name)!, this.g.get(s.name)!, this.m.get(s.name)!, this.v.get(s.name)!, ap, clip);
    }
    for (const s of specs) if (s.unitRows) be.renormRows(this.p.get(s.name)!);
  }

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

  private async readSet(set: Map<string, Tensor>): Promise<HostWeights> {
    const out: Partial<HostWeights> & { extra: Record<string, Float32Array> } = { extra: {} };
    for (const s of this.specs) {
      const a = await this.backend.read(set.get(s.name)!) as Float32Array;
      if (s.role) out[s.role] = a;
      else out.extra[s.name] = a;
    }
    return out as HostWeights;
  }

  readWeights(): Promise<HostWeights> {
    return this.readSet(this.p);
  }

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

  dispose(): void {
    const be = this.backend;
    for (const set of [this.p, this.g, this.m, this.v]) for (const t of set.values()) be.dispose(t);
    for (const t of [this.counter, this.deadMask, this.threshold, this.stats, ...this.xs.values()]) {
      be.dispose(t);
    }
    this.xs.clear();
    this.tape.dispose();
  }
}
