"""Every cached computation the study's tables need, grouped into independent jobs (for `reproduce --jobs`)."""
from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError
from . import variants as V
from ..diffusion.lightningdit import DIT_SIZES
from .repa import repa_calls
from .tables import BY_KEY, CFG, TABLES, names_for


def jobs(study_overrides: Sequence[str] = (), family: str = "toy-XS", *, seeds: Sequence[int] = V.SEEDS,
         base_seed: int = 0, tables: Sequence[str] | None = None, patch: int = 1, ladder: V.Ladder = V.LADDERS[4]
         ) -> list[tuple[tuple[str, ...], list[tuple[str, str, tuple]]]]:
    """Every cached computation the tables need, grouped into independent jobs (for `reproduce --jobs`).

    A job is (study overrides, [(method, tokenizer, extra), ...]); calls inside a job run in order, jobs in any
    order once the first job (a tokenizer's pipeline, which also trains the shared toy networks) is done.
    `family` is the preset DiT's size without its patch (`Study.dit_family`), for the Table 1 rows; `seeds` are
    the seeds of the `seeds` tables (`base_seed`: the run's own), over DiTs or tokenizer x DiT pairs as the preset's
    `ladder` says; `tables` (keys of TABLES) keeps only the
    jobs those tables need, tokenizers in the order the tables name them. A tokenizer's convergence runs come
    first in its job, so that its DiTs are trained once, with their snapshots; the scaling table's other DiT
    sizes (at the preset DiT's `patch`) are one job per tokenizer and size, after the tokenizers' jobs.
    """
    unknown = [k for k in tables or () if k not in BY_KEY]
    if any("=" in k for k in unknown):
        raise ConfigError(f"--tables {' '.join(unknown)}: those look like config overrides, which --tables swallowed; "
                          "put them before --tables (reproduce --preset lab dit.train.steps=100 --tables dilemma)")
    if unknown:
        raise ConfigError(f"--tables {' '.join(unknown)}: no such table; choose from {', '.join(BY_KEY)}")
    chosen = [BY_KEY[k] for k in tables] if tables else TABLES
    keys = {t.key for t in chosen}
    ov = tuple(study_overrides)
    per_name = [t for t in chosen if t.key not in ("table1", "sampling") and t.jobs_by_name]
    names = list(dict.fromkeys(n for t in per_name for n in names_for(t, ladder)))
    guided = {n for t in per_name if t.guided for n in names_for(t, ladder)}
    seeded = {n for t in per_name if t.seeds for n in names_for(t, ladder)}
    pairs = V.seed_runs(seeds, base_seed, tokenizer_seeds=ladder.tokenizer_seeds)
    out = []
    for name in names:
        runs = pairs if name in seeded else [()]
        calls = [("generation", name, r) for r in runs] + [("recon", name, ())]  # rFID: every gFID's bound
        if "convergence" in keys and name in ladder.convergence:
            calls = [("convergence", name, r) for r in runs] + calls
        if ("dilemma" in keys and name in ladder.rungs) or (ladder.tokenizer_seeds and name in seeded):
            calls += [("recon", name, (f"seed={s}",)) for s in seeds if s != base_seed]  # rFID per tokenizer seed
        if name in guided:
            calls += [("generation", name, (CFG, *r)) for r in runs]
        if "proxies" in keys and name in names_for(BY_KEY["proxies"], ladder):
            calls.append(("probe", name, ()))
        if "table6" in keys and name in names_for(BY_KEY["table6"], ladder):
            calls.append(("uniformity", name, ()))
            if ladder.tokenizer_seeds:  # Table 6 per tokenizer seed, for its verdicts
                calls += [("uniformity", name, (f"seed={s}",)) for s in seeds if s != base_seed]
        out.append((ov, calls))
    if "scaling" in keys:
        sized = [(n, V.size_overrides(f, f"{family}/{patch}")) for n in ladder.scaling for f in V.SCALING_SIZES]
        out += [(ov, [("generation", n, (*extra, *r)) for r in pairs]) for n, extra in sized if extra]
    if keys & {"table1", "sampling"}:  # their verdicts' yardstick: the DiT over the study's seed runs
        out.append((ov, [("generation", ladder.dit_tokenizer, r) for r in pairs]))
    rows = V.row_runs(ladder, seeds, base_seed)  # each Table 1 row and sampling setting, in these runs
    if "table1" in keys:
        out += [(ov, [("generation", ladder.dit_tokenizer, (*V.table1_overrides(i, family), *r)) for r in rows])
                for i in range(len(V.TABLE1))]
    if "sampling" in keys:
        sweeps = [extra for _, extra in V.SAMPLER_SWEEP] + [(f"sample.cfg_scale={s}",) for s in V.CFG_SWEEP] + \
            [(CFG, f"sample.cfg_interval_start={t}") for t in V.INTERVAL_SWEEP] + \
            [(f"sample.timestep_shift={s}",) for s in V.SHIFT_SWEEP]
        out += [(ov, [("generation", ladder.dit_tokenizer, (*e, *r)) for e in sweeps[k:k + 4] for r in rows])
                for k in range(0, len(sweeps), 4)]
    if keys & {"repa", "repa_curves", "repa_depth", "repa_probe"}:  # REPA beside VA-VAE: its arms, curves, sweep, probe
        size = f"{family}/{patch}"
        blocks = range(1, DIT_SIZES[size]["depth"] + 1)
        out += [(ov, calls) for calls in repa_calls(pairs, V.repa_tokenizers(ladder), V.repa_overrides(size),
                                                    [V.repa_overrides(size, k) for k in blocks],
                                                    curves="repa_curves" in keys, table="repa" in keys,
                                                    sweep="repa_depth" in keys, probe="repa_probe" in keys)]
        if "repa" in keys:  # the plain arms: every seed run, guided too, and each tokenizer's rFID bound
            out += [(ov, [*(("generation", n, r) for r in pairs), *(("generation", n, (CFG, *r)) for r in pairs),
                          ("recon", n, ()), *(("recon", n, (f"seed={s}",)) for s in seeds if s != base_seed)])
                    for n in V.repa_tokenizers(ladder)]
    seen: set = set()  # e.g. the CFG sweep's scale 3 is the guided column: run each call once
    out = [(o, [c for c in calls if not (c in seen or seen.add(c))]) for o, calls in out]
    return [job for job in out if job[1]]


def study_jobs(study, tables: Sequence[str] | None = None) -> list:
    """`jobs` for a `Study` (its DiT family and patch, seeds, base seed and ladder): what `reproduce` runs and
    `reproduce --plan` lists."""
    return jobs(family=study.dit_family, seeds=study.seeds, base_seed=study.base.seed, tables=tables,
                ladder=study.ladder, patch=int(study.dit_size.rsplit("/", 1)[1]))
