"""The toy study's named runs: tokenizer variants, the Table 1 DiT ladder, sampling sweeps, and the paper's numbers."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..build import downsampling


def _tok(d: int, vf: bool, *extra: str) -> tuple[str, ...]:
    """Overrides for a tokenizer of latent size d, with or without the VF loss."""
    return (f"tokenizer.model.embed_dim={d}", f"tokenizer.model.z_channels={d}",
            f"tokenizer.vf.enabled={str(vf).lower()}", *extra)


@dataclass(frozen=True)
class TokenizerVariant:
    """One tokenizer of the study: its latent size, VF setting, config overrides and what its label adds after f?d?."""

    name: str
    d: int
    vf: bool
    overrides: tuple[str, ...]
    suffix: str = ""

    def label(self, f: int) -> str:
        """Its name in tables at downsampling factor f: "f8d16 + VF" (`Study.label` passes the preset's f)."""
        return f"f{f}d{self.d}{self.suffix}"


VF_DOSES = (0.05, 0.5)  # the VF weights beside 0 and the presets' 0.1 in the dose-response


def _ablations(d: int) -> list[TokenizerVariant]:
    """The high rung's VF variants at latent size d: Table 5's parts and margins, Table 4's foundation models, and
    the dose-response of the VF weight (the presets' weight is 0.1, the paper's)."""
    return [
        # Table 5: the VF loss without one of its parts (the lab default already has no margins, see the last one)
        TokenizerVariant(f"d{d}_vf_no_mcos", d, True, _tok(d, True, "tokenizer.vf.use_mcos=false"),
                         " + VF without mcos"),
        TokenizerVariant(f"d{d}_vf_no_mdms", d, True, _tok(d, True, "tokenizer.vf.use_mdms=false"),
                         " + VF without mdms"),
        TokenizerVariant(f"d{d}_vf_margins", d, True, _tok(d, True, "tokenizer.vf.m1=0.5", "tokenizer.vf.m2=0.25"),
                         " + VF with paper margins"),
        # Table 4: which "foundation model" the latents are aligned with
        TokenizerVariant(f"d{d}_vf_masked", d, True, _tok(d, True, "tokenizer.vf.toy.objective=masked"),
                         " + VF (masked-modelling VFM)"),
        TokenizerVariant(f"d{d}_vf_random", d, True, _tok(d, True, "tokenizer.vf.foundation=toy_random"),
                         " + VF (random-weights VFM)"),
        # the VF weight's dose-response: 0 (the plain rung), 0.05, 0.1 (the rung's VF twin), 0.5
        *(TokenizerVariant(f"d{d}_vf_w{w}", d, True, _tok(d, True, f"tokenizer.vf.weight={w}"), f" + VF (weight {w})")
          for w in VF_DOSES),
    ]


TOKENIZERS: dict[str, TokenizerVariant] = {v.name: v for v in [
    *(TokenizerVariant(f"d{d}", d, False, _tok(d, False)) for d in (4, 8, 16, 32)),
    *(TokenizerVariant(f"d{d}_vf", d, True, _tok(d, True), " + VF") for d in (8, 16, 32)),
    *_ablations(16), *_ablations(32),  # the high rung of the f8 ladder (lab) and of the f4 ladder (lab_classic)
]}


@dataclass(frozen=True)
class Ladder:
    """The d ladder of notebooks 01 and 02 at one downsampling factor f: three rungs without VF (low, middle, high d),
    the rungs that also get a VF twin (Table 2), the paper tokenizer each rung stands beside, whether every gFID
    is measured over tokenizer seeds x DiT seeds (else over DiT seeds on one tokenizer), and how many log-spaced DiT
    steps each convergence curve reads (Fig. 4a/b, notebook 07; halving from the preset's budget)."""

    f: int
    rungs: tuple[str, str, str]
    vf_rungs: tuple[str, ...]
    paper: dict = field(default_factory=dict)  # toy variant -> the paper's tokenizer (docs/paper.md §4)
    tokenizer_seeds: bool = False
    curve_points: int = 4

    @property
    def table2(self) -> tuple[str, ...]:
        """Table 2's rows: each VF rung without, then with the VF loss."""
        return tuple(n for r in self.vf_rungs for n in (r, f"{r}_vf"))

    @property
    def top(self) -> str:
        """The highest rung with a VF twin, where the paper's VF gain is largest: every ablation and the DiT of
        notebooks 04 and 05 sit on it (f4: d32, f8: d16)."""
        return self.vf_rungs[-1]

    @property
    def table5(self) -> tuple[str, ...]:
        """Table 5: the top rung, its VF twin, and the VF loss without mcos, without mdms, with the paper's margins."""
        t = self.top
        return (t, f"{t}_vf", f"{t}_vf_no_mcos", f"{t}_vf_no_mdms", f"{t}_vf_margins")

    @property
    def table4(self) -> tuple[str, ...]:
        """Table 4: the top rung, its VF twin (the toy VFM), and VF with a masked-modelling and a random VFM."""
        t = self.top
        return (t, f"{t}_vf", f"{t}_vf_masked", f"{t}_vf_random")

    @property
    def vf_dose(self) -> tuple[str, ...]:
        """The VF weight's dose-response on the top rung: 0, 0.05, 0.1 (its VF twin), 0.5."""
        t = self.top
        return (t, f"{t}_vf_w{VF_DOSES[0]}", f"{t}_vf", f"{t}_vf_w{VF_DOSES[1]}")

    @property
    def uniformity(self) -> tuple[str, str]:
        """Table 6 compares latents with and without VF at one d, as the paper does: the top rung and its twin."""
        return self.top, f"{self.top}_vf"

    @property
    def latent_views(self) -> tuple[str, ...]:
        """The latents notebook 03 draws: the lowest rung, the top rung and its VF twin."""
        return (self.rungs[0], *self.uniformity)

    @property
    def dit_tokenizer(self) -> str:
        """The latents notebooks 04 and 05 train and sample on: the top rung's VF twin."""
        return f"{self.top}_vf"

    @property
    def convergence(self) -> tuple[str, ...]:
        """Fig. 4a/b's curves: the lowest rung, the top rung and its VF twin."""
        return (self.rungs[0], *self.uniformity)

    @property
    def speedup(self) -> tuple[str, str]:
        """The speed-up of Fig. 4a/b: the top rung's VF twin against the top rung."""
        return self.uniformity

    @property
    def scaling(self) -> tuple[str, str]:
        """Fig. 4c: the DiT sizes on the lowest and the highest rung."""
        return self.rungs[0], self.rungs[-1]


LADDERS: dict[int, Ladder] = {
    # f8 on 32 px (a 4 x 4 grid): d4 / d8 / d16 keep 48x / 24x / 12x fewer numbers than the image, the paper's
    # f16d16 / d32 / d64 on 256 px; so each rung stands beside the paper's tokenizer of the same compression; its
    # curves read 6 points (1/32 of the budget to all of it), to see whether they level off
    8: Ladder(8, ("d4", "d8", "d16"), ("d8", "d16"), {"d4": "f16d16", "d8": "f16d32", "d16": "f16d64"},
              tokenizer_seeds=True, curve_points=6),
    # f4 on 32 px (an 8 x 8 grid): 12x / 3x / 1.5x, the classic toy (lab_classic); rungs beside the paper's by d
    4: Ladder(4, ("d4", "d16", "d32"), ("d16", "d32"), {"d16": "f16d16", "d32": "f16d32"}),
}


def study_tokenizers(ladder: Ladder) -> tuple[str, ...]:
    """The tokenizers of the study's tokenizer tables on a d ladder: its rungs, Table 2's, Table 5's and Table 4's."""
    return tuple(dict.fromkeys((*ladder.rungs, *ladder.table2, *ladder.table5, *ladder.table4)))


def ladder_of(config) -> Ladder:
    """The d ladder of a config's tokenizer (LADDERS); ConfigError for an f the toy study has none for."""
    f = downsampling(config)
    if f not in LADDERS:
        from ..errors import ConfigError

        raise ConfigError(f"the toy study has d ladders for f = {', '.join(map(str, LADDERS))}, and this config's "
                          f"tokenizer.model.ch_mult={list(config.tokenizer.model.ch_mult)} downsamples {f}x; use a "
                          "toy preset (lab, lab_classic, smoke)")
    return LADDERS[f]


# Every gFID of the tokenizer tables is measured with these DiT seeds on the same tokenizer (training and sampling
# noise; the tokenizers stay fixed), and shown as the mean, each seed, and the spread between them.
SEEDS = (0, 1)


def seed_overrides(seed: int, base: int = 0) -> tuple[str, ...]:
    """Overrides that repeat a DiT and its sampling with `seed` on the same tokenizer (none for the run's own seed)."""
    return () if seed == base else (f"dit.seed={seed}", f"sample.seed={seed}")


def seed_runs(seeds, base: int = 0, *, tokenizer_seeds: bool = False) -> list[tuple[str, ...]]:
    """The extra overrides of every run a gFID is averaged over: each DiT seed on the run's tokenizer, or with
    `tokenizer_seeds` each (tokenizer seed, DiT seed) pair, tokenizer-major: the tokenizer is retrained with the
    top-level seed, its DiT keeps the DiT seed asked for."""
    if not tokenizer_seeds:
        return [seed_overrides(s, base) for s in seeds]
    return [(*(() if t == base else (f"seed={t}",)), *seed_overrides(s, t)) for t in seeds for s in seeds]


# Fig. 4a/b: gFID against DiT steps, from snapshots of one run per tokenizer and DiT seed (Ladder.curve_points
# log-spaced steps ending at the preset's budget; Ladder.convergence); the speed-up is the steps the VF twin needs to
# reach the plain top rung's final gFID (Ladder.speedup). Fig. 4c: gFID at the preset's step budget for DiT sizes
# (same patch as the preset's DiT) on the lowest and highest rung (Ladder.scaling)
SCALING_SIZES = ("toy-XS", "toy-S", "toy-M")
FIG4_PAPER_NOTE = ("the paper (docs/paper.md §1): with the VF loss the DiT converges up to 2.7x faster on f16d32 "
                   "(Fig. 4a/b), and a high-d latent needs a much larger DiT to catch up (Fig. 1, Fig. 4c)")


def size_overrides(family: str, base_size: str) -> tuple[str, ...]:
    """The DiT overrides for size `family` ("toy-S") at the patch of the preset's `base_size` (none for that size)."""
    size = f"{family}/{base_size.rsplit('/', 1)[1]}"
    return () if size == base_size else (f"dit.model.size={size}",)

def row_runs(ladder: Ladder, seeds, base: int = 0) -> list[tuple[str, ...]]:
    """The runs each row of Table 1 and of the sampling sweeps is measured in: every DiT seed on the base tokenizer
    where the ladder measures everything over seeds (the f8 regime: each step is then judged by the seed rule at its
    own gFID level), else the base run alone (the first study: one seed per row, judged against a yardstick)."""
    return [seed_overrides(s, base) for s in seeds] if ladder.tokenizer_seeds else [()]


# Table 1, cumulative: each row adds its overrides to all rows above it. The last row is the preset's DiT;
# {family} is the preset DiT's size without its patch ("toy-XS" for lab).
TABLE1: list[tuple[str, tuple[str, ...]]] = [
    ("DiT: DDPM, GELU, LayerNorm, abs. pos., patch 2, AdamW b2 0.999",
     ("dit.transport.path=ddpm", "sample.sampler=ddpm", "dit.model.mlp=gelu", "dit.model.norm=layernorm",
      "dit.model.pos=abs", "dit.model.size={family}/2", "dit.train.betas=[0.9,0.999]",
      "dit.transport.t_sampling=uniform", "dit.transport.cos_weight=0.0")),
    ("+ rectified flow", ("dit.transport.path=rectified_flow", "sample.sampler=euler")),
    ("+ AdamW b2 0.95", ("dit.train.betas=[0.9,0.95]",)),
    ("+ logit-normal t", ("dit.transport.t_sampling=logit_normal",)),
    ("+ velocity direction loss", ("dit.transport.cos_weight=1.0",)),
    ("+ SwiGLU", ("dit.model.mlp=swiglu",)),
    ("+ RMSNorm", ("dit.model.norm=rmsnorm",)),
    ("+ RoPE", ("dit.model.pos=rope",)),
    ("+ patch 1 (= the lab LightningDiT)", ("dit.model.size={family}/1",)),
]
TABLE1_PAPER = [19.50, 17.20, 16.61, 13.99, 12.52, 10.10, 9.25, 7.13, 4.29]  # FID-50k, DiT-XL, 80 ep, no CFG
TABLE1_PAPER_NOTE = ("the paper's Table 1 also has 'batch x4 & lr x2' (16.59) between rectified flow and AdamW b2 "
                     "0.95, left out here (a 4x batch would quadruple every later row's cost); and its last row swaps "
                     "the tokenizer (SD-VAE f8d4 at patch 2 -> VA-VAE f16d32 at patch 1, the same 16 x 16 tokens), "
                     "while the toy's keeps its tokenizer and goes to patch 1 (4x the tokens)")


def table1_overrides(row: int, family: str = "toy-S") -> tuple[str, ...]:
    """The cumulative DiT overrides of Table 1 row `row` (0 = the plain DiT) for a DiT size family ("toy-XS")."""
    out: list[str] = []
    for _, extra in TABLE1[:row + 1]:
        out.extend(e.format(family=family) for e in extra)
    return tuple(out)


# Notebook 07: REPA beside VA-VAE on the ladder's high rung, plain and with VF (`repa_tokenizers`), each DiT trained
# with and without REPA as published (sihyun-yu/REPA: weight 0.5, the tokens after block 8 of SiT-XL's 28 through a
# 2048-wide SiLU MLP, 1.8x the DiT's width), scaled to the preset's DiT: the block at the same fraction of its depth,
# a projector twice its width; aligned to the toy VFM, the one VA-VAE aligns its latents to
REPA_WEIGHT = 0.5
REPA_FRACTION = 8 / 28


def repa_overrides(size: str, depth: int | None = None) -> tuple[str, ...]:
    """The DiT overrides that add REPA to a DiT of registry size `size` ("toy-S/1"); `depth`: another block k."""
    from ..diffusion.lightningdit import DIT_SIZES

    shape = DIT_SIZES[size]
    k = depth if depth is not None else max(1, round(shape["depth"] * REPA_FRACTION))
    return (f"dit.repa.weight={REPA_WEIGHT}", f"dit.repa.depth={k}",
            f"dit.repa.projector_dim={2 * shape['hidden_size']}", "dit.repa.foundation=toy")


def repa_tokenizers(ladder: Ladder) -> tuple[str, str]:
    """The 2 x 2's tokenizers: the ladder's highest VF rung without and with the VF loss."""
    top = ladder.vf_rungs[-1]
    return top, f"{top}_vf"


# Notebook 05: sampling sweeps on the lab DiT. The solvers: (method, steps; None for the adaptive dopri5)
SAMPLERS = [*((s, n) for s in ("euler", "heun") for n in (5, 10, 20, 40)), ("dopri5", None)]


def sampler_overrides(method: str, steps: int | None) -> tuple[str, ...]:
    """The sample overrides of one solver setting of the sweep."""
    return (f"sample.sampler={method}", *(() if steps is None else (f"sample.steps={steps}",)))


SAMPLER_SWEEP = [(f"{m} {n} steps" if n else f"{m} adaptive", sampler_overrides(m, n)) for m, n in SAMPLERS]
CFG_SWEEP = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
INTERVAL_SWEEP = [0.0, 0.11, 0.3, 0.5]  # guidance only while t >= start, at CFG 3
SHIFT_SWEEP = [0.3, 0.5, 1.0, 2.0]

# Paper numbers printed beside the toy tables (docs/paper.md §2, §4, §7)
TABLE2_PAPER = {  # the paper's tokenizer -> (rFID, PSNR, gFID LightningDiT-B); "_vf": with the VF loss (DINOv2)
    "f16d16": (0.49, 26.10, 16.24), "f16d16_vf": (0.55, 25.29, 15.79),
    "f16d32": (0.26, 28.59, 22.62), "f16d32_vf": (0.28, 27.96, 15.82),
    "f16d64": (0.17, 31.03, 36.83), "f16d64_vf": (0.14, 30.71, 24.00),
}
# Tables 5, 4 and 6 are the paper's f16d32 rows, keyed by the toy variant's name after the ladder's top rung ("" for
# the rung, "_vf" for its VF twin, ...): the toy ablates its top rung (Ladder.top), where its VF gain is.
# Each toy row beside the paper row with the same loss: the toy default (VF twin) has no margins, so it stands beside
# the paper's "without margins" (17.77), and the toy row with the paper's margins beside the paper's full loss (15.82)
TABLE5_PAPER = {"": 22.62, "_vf": 17.77, "_vf_no_mcos": 21.87, "_vf_no_mdms": 17.74, "_vf_margins": 15.82}
TABLE4_PAPER = {"": 22.62, "_vf": 15.82, "_vf_masked": 19.89, "_vf_random": None}
TABLE6_PAPER = {  # f16d32 none / DINOv2, by uniformity metric (vavae_lab.analysis.uniformity.METRICS)
    "": {"density": 0.263, "gini": 0.145, "entropy": 0.995},
    "_vf": {"density": 0.178, "gini": 0.096, "entropy": 0.998},
}
