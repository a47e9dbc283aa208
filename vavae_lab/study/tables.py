"""The toy versions of the paper's tables, as lists of row dicts computed from a `Study` (cached runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..analysis.proxy import spearman
from ..analysis.uniformity import METRICS
from ..diffusion.samplers import NFE_PER_STEP
from . import variants as V
# the verdicts live in claims.py; notebooks reach them as tables.<name> too
from .claims import (ABOVE_COLUMNS, CLAIM_COLUMNS, SINGLE_SEED_COLUMNS, ablation_claims, above_bound,  # noqa: F401
                     below_bound, below_rfid, claim, dilemma_claims, dose_claims, other_readings, sampling_claims,
                     scaling_gaps, seeded_speedup, single_seed_claim, speedup, step_claim, steps_to_reach,
                     table1_claims, vf_claims)
from .rows import (CFG, Rows, labelled, bound, per_run_recon, recon_by_seed, run_bounds, seeded_gfid,  # noqa: F401
                   seeded_recon, tokenizer_rows)
from .dose import vf_dose
from .repa import (PROBE_CLAIM_COLUMNS, depth_verdicts, probe_rows, probe_verdicts, repa_curves, repa_depth, repa_rows,
                   repa_verdicts)
from .runner import Study

SMOKE_NOTE = ("smoke preset: this checks the plumbing only; every model, the FID feature network included (near "
              "chance accuracy), trains for seconds, so its numbers mean nothing (the lab preset gives the study's numbers)")


def _gen(study: Study, name: str, *extra: str) -> float:
    """gFID of a variant (no guidance unless `extra` says so)."""
    return study.generation(name, *extra)["fid"]


def dilemma(study: Study) -> list[dict]:
    """Notebook 01: reconstruction (per tokenizer seed) and generation (per seed run) against latent size d (no VF),
    on the preset's ladder (`Study.ladder`)."""
    return tokenizer_rows(study, study.ladder.rungs, guided=True, per_run=True)


def table2(study: Study) -> list[dict]:
    """Table 2 at toy scale: the ladder's VF rungs with and without VF, beside the paper's rFID, PSNR and gFID (B)
    of its tokenizer at the same compression (`Ladder.paper`)."""
    ladder = study.ladder
    rows = tokenizer_rows(study, ladder.table2, guided=True)
    for row in rows:
        v = V.TOKENIZERS[row["name"]]
        paper = ladder.paper[f"d{v.d}"] + ("_vf" if v.vf else "")
        row["paper_tokenizer"] = paper
        row["paper_rfid"], row["paper_psnr"], row["paper_gfid"] = V.TABLE2_PAPER[paper]
    return rows


def dilemma_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """Notebook 01's claims (`claims.dilemma_claims`) on its rows, naming the seed runs the study measures."""
    return dilemma_claims(rows, "tokenizer x DiT seeds" if study.ladder.tokenizer_seeds else "DiT seeds")


def claims(study: Study) -> list[dict]:
    """The paper's three central claims checked on notebook 01's and 02's rows by the study's seed rule."""
    return labelled(study, dilemma_verdicts(study, dilemma(study)) + vf_claims(table2(study)))


def _ablation(study: Study, names: Sequence[str], paper: dict) -> list[dict]:
    """gFID rows of an ablation table with the paper's gFID beside each (`paper` is keyed by the variant's name
    after the ladder's top rung: "" for the rung itself, "_vf" for its VF twin, ...)."""
    rows = tokenizer_rows(study, names)
    top = study.ladder.top
    for row in rows:
        row["paper_gfid"] = paper.get(row["name"][len(top):])
    return rows


def table5(study: Study) -> list[dict]:
    """Table 5 at toy scale: the VF loss without mcos, without mdms, and with the paper's margins."""
    return _ablation(study, study.ladder.table5, V.TABLE5_PAPER)


def table4(study: Study) -> list[dict]:
    """Table 4 at toy scale: aligning with a supervised, a masked-modelling, or a random-weights network."""
    return _ablation(study, study.ladder.table4, V.TABLE4_PAPER)


def table6(study: Study, *, workers: int = 1) -> list[dict]:
    """Table 6 at toy scale: each uniformity metric (mean +- std over t-SNE runs) and gFID, beside the paper's; where
    the ladder retrains the tokenizer per seed, each metric per tokenizer seed too (`<metric>_seeds`, `_spread`)."""
    rows = []
    for name in study.ladder.uniformity:
        u = study.uniformity(name, workers=workers)
        paper = V.TABLE6_PAPER.get(name[len(study.ladder.top):], {})
        row = {"name": name, "tokenizer": study.label(name), **seeded_gfid(study, name),
               **run_bounds(study, name), **{k: u[k]["mean"] for k in METRICS},
               **{f"{k}_std": u[k]["std"] for k in METRICS}, "n": u["n"], "runs": u["runs"],
               **{f"paper_{k}": paper.get(k) for k in METRICS}}
        if study.ladder.tokenizer_seeds:
            per = [study.uniformity(name, *study.tokenizer_seeded(s), workers=workers) for s in study.seeds]
            for k in METRICS:
                values = [p[k]["mean"] for p in per]
                row.update({f"{k}_seeds": values, f"{k}_spread": max(values) - min(values)})
        rows.append({**row, "bound": below_bound(row)})
    return labelled(study, rows)


def table6_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """Does VF make the latents more uniform, by each metric, over the tokenizer seeds (the seed rule; none where
    the ladder trains one tokenizer per variant)?"""
    if not study.ladder.tokenizer_seeds:
        return []
    plain, vf = rows
    out = []
    for k, m in METRICS.items():
        low, high = (plain, vf) if m.higher_is_uniform else (vf, plain)  # `high` holds the larger value if VF helps
        out.append(claim(f"VF makes the latents more uniform by {m.label}: {plain['tokenizer']} -> "
                         f"{vf['tokenizer']}", low, high, k, flip=not m.higher_is_uniform))
    return labelled(study, out)


# Table 6's verdicts differ by thousandths (density CV, Gini) and ten-thousandths (entropy), and carry no readings
TABLE6_CLAIM_COLUMNS = [("claim", "claim", ""), ("diff_seeds", "difference per tokenizer seed", "+.3g"),
                        ("spread", "seed spread", ".3g"), ("verdict", "verdict", "")]


# proxy -> sign, so that a correlation of +1 means "ranks like gFID": +1 where lower is better (gFID, density CV,
# Gini), -1 for a uniformity metric where higher is more uniform (entropy)
PROXIES = {"probe_gfid": 1.0, **{f"probe_{k}": -1.0 if m.higher_is_uniform else 1.0 for k, m in METRICS.items()}}


def proxies(study: Study, names: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Each tokenizer's cheap proxies beside its full gFID, and Spearman's rank correlation of each proxy.

    Returns (rows, {"n": tokenizers, proxy: rho}); a metric where higher is more uniform (entropy) is negated, so
    +1 always means "ranks like gFID".
    """
    names = list(names or V.study_tokenizers(study.ladder))
    rows = [{"name": n, "tokenizer": study.label(n), "gfid": _gen(study, n), **bound(study, n),
             **study.probe(n)} for n in names]
    for row in rows:
        row["bound"] = below_rfid(row["gfid"], row["rfid"])
    gfid = [r["gfid"] for r in rows]
    corr = {"n": len(rows), **{k: sign * spearman([r[k] for r in rows], gfid) for k, sign in PROXIES.items()}}
    return labelled(study, rows), corr


def _over_runs(study: Study, name: str, *extra: str) -> dict:
    """`seeded_gfid` of one Table 1 row or sampling setting over `Study.row_runs` (mean, each run, spread, the
    readings: None where a run lacks one), with the training loss and the seconds of the first run."""
    runs = study.row_runs()
    first = study.generation(name, *extra, *runs[0])
    return {**dict.fromkeys(("is", "precision", "recall", "class_acc", "kid")),
            **seeded_gfid(study, name, "gfid", *extra, runs=runs), "dit_loss": first.get("dit_loss"),
            "seconds": first.get("seconds")}


def table1(study: Study) -> list[dict]:
    """Table 1 at toy scale: the DiT -> LightningDiT ladder, each row's gFID (no CFG) and final loss, over the
    study's row runs (`Study.row_runs`)."""
    name = study.ladder.dit_tokenizer
    rows, limit = [], bound(study, name)
    for i, (label, _) in enumerate(V.TABLE1):
        res = _over_runs(study, name, *study.table1(i))
        rows.append({"row": i, "change": label, **{k: res.get(k) for k in ("gfid", "gfid_seeds", "gfid_spread",
                                                                            "dit_loss", "class_acc", "class_acc_n",
                                                                            "kid", "kid_std")},
                     **limit, "bound": below_rfid(res["gfid"], limit["rfid"]), "paper_fid": V.TABLE1_PAPER[i]})
    return labelled(study, rows)


def yardstick(study: Study) -> dict:
    """The seed spread single-seed rows are judged against: the DiT of notebooks 04 and 05 over the study's seed runs."""
    return seeded_gfid(study, study.ladder.dit_tokenizer)


def table1_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """Table 1's verdicts (`claims.table1_claims`) against the study's yardstick."""
    return table1_claims(rows, yardstick(study))


def sampling_verdicts(study: Study, sweeps: dict) -> list[dict]:
    """Notebook 05's verdicts on the sweeps (`claims.sampling_claims`) against the study's yardstick."""
    return sampling_claims(sweeps, yardstick(study))


def sampling(study: Study) -> dict[str, list[dict]]:
    """Notebook 05's sweeps on the lab DiT: sampler and steps, CFG scale, CFG interval, timestep shift."""
    name = study.ladder.dit_tokenizer
    limit = bound(study, name)
    rfid = limit["rfid"]

    def row(label, *extra, **fields):
        res = _over_runs(study, name, *extra)
        return {"setting": label, **fields, **res, **limit, "bound": below_rfid(res["gfid"], rfid)}

    sweeps = {
        "sampler": [row(label, *extra, method=m, steps=n, nfe=n and n * NFE_PER_STEP[m])
                    for (label, extra), (m, n) in zip(V.SAMPLER_SWEEP, V.SAMPLERS)],
        "cfg": [row(f"CFG {s}", f"sample.cfg_scale={s}", cfg=s) for s in V.CFG_SWEEP],
        "interval": [row(f"CFG 3, t >= {t}", CFG, f"sample.cfg_interval_start={t}", start=t)
                     for t in V.INTERVAL_SWEEP],
        "shift": [row(f"shift {s}", f"sample.timestep_shift={s}", shift=s) for s in V.SHIFT_SWEEP],
    }
    return {k: labelled(study, v) for k, v in sweeps.items()}


def convergence(study: Study) -> tuple[list[dict], dict]:
    """Fig. 4a/b at toy scale: each tokenizer's gFID after each of the study's curve steps, one curve per seed run
    (labelled by its DiT seed, or "t<tokenizer seed>d<DiT seed>" where the ladder retrains the tokenizer per seed),
    each held to its own tokenizer's rFID; and the speed-up of the top rung's VF twin over it (`seeded_speedup`)."""
    rows = []
    for name in study.ladder.convergence:
        for run in study.seed_runs():
            tok, dit = study.run_seeds(run)
            curve = study.convergence(name, *run)
            rec = study.recon(name, *study.tokenizer_seeded(tok))
            limit = {"rfid": rec["rfid"], "recon_class_acc": rec["recon_class_acc"]}
            rows.append({"name": name, "tokenizer": study.label(name),
                         "seed": f"t{tok}d{dit}" if study.ladder.tokenizer_seeds else dit,
                         "steps": [r["step"] for r in curve], "gfid_steps": [r["fid"] for r in curve],
                         "class_acc_steps": [r.get("class_acc") for r in curve], **limit,
                         "below_rfid_steps": [r["step"] for r in curve if r["fid"] < limit["rfid"]] or "none"})
    return labelled(study, rows), seeded_speedup(rows, *study.ladder.speedup)


def scaling(study: Study, sizes: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Fig. 4c at toy scale: gFID at the preset's step budget for each DiT size (`sizes`, default
    V.SCALING_SIZES) on a low-d and a high-d tokenizer, with the DiT's parameters, FLOPs per training step
    (`estimate.dit_cost`) and training steps; and the high-d gap per size."""
    rows = []
    for name in study.ladder.scaling:
        for family in sizes or V.SCALING_SIZES:
            extra = study.sized(family)
            cost = study.dit_cost(name, *extra)
            dit = study.config(name, *extra).dit
            row = {"name": name, "tokenizer": study.label(name), "size": dit.model.size, "steps": dit.train.steps,
                   "params": cost["params"], "gflops_step": cost["flops_per_step"] / 1e9,
                   **run_bounds(study, name), **seeded_gfid(study, name, "gfid", *extra)}
            rows.append({**row, "bound": below_bound(row)})
    return labelled(study, rows), scaling_gaps(rows, *study.ladder.scaling)


def _convergence_notes(results: dict) -> list[str]:
    """The figure, the speed-up per seed run with its verdict, and the paper's Fig. 4, as report lines."""
    lines = ["", "![convergence](convergence.png)", ""]
    sp = results.get("speedup")
    if sp:
        seeds = " / ".join("-" if v is None else f"{v:.2f}x" for v in sp["speedup_seeds"])
        steps = " / ".join("-" if v is None else f"{v:.0f}" for v in sp["steps_seeds"])
        spread = "" if sp["speedup_spread"] is None else f", spread {sp['speedup_spread']:.2f}"
        lines.append(f"Speed-up: {sp['claim']} ({' / '.join(f'{t:.1f}' for t in sp['target_seeds'])} per seed run) "
                     f"after {steps} steps: {seeds}{spread}. Verdict: {sp['verdict']}.")
    return lines + ["", f"({V.FIG4_PAPER_NOTE})"]


def _scaling_notes(results: dict) -> list[str]:
    """The high-d gap per DiT size and the verdict on whether it shrinks, as report lines."""
    sc = results.get("scaling_gap")
    if not sc:
        return []
    gaps = "; ".join(f"{g['size']} {g['gap']:+.1f} ({' / '.join(f'{d:+.1f}' for d in g['gap_seeds'])})"
                     for g in sc["gaps"])
    return ["", "![scaling](scaling.png)", "", f"gFID gap {sc['high']} - {sc['low']} per DiT size (per DiT seed): {gaps}. "
                f"Claim: {sc['claim']['claim']}. Verdict: {sc['claim']['verdict']}. "
                + (f"Claim: {sc['acc_claim']['claim']}. Verdict: {sc['acc_claim']['verdict']}. "
                   if sc.get("acc_claim") else "") + "FLOPs per step are counted by "
                "torch.utils.flop_counter (forward + backward of one batch).", "", f"({V.FIG4_PAPER_NOTE})"]


Column = tuple[str, str, str]  # (row key, header, format)
# a list value (one per seed run) is shown as "a / b"
# what no DiT on the row's tokenizer can beat: its reconstructions scored as samples (`bound`)
BOUND_COLUMNS: list[Column] = [("rfid", "rFID (bound)", ".1f"), ("recon_class_acc", "recon class acc.", ".2f")]
GFID_COLUMNS: list[Column] = [("gfid", "gFID", ".2f"), ("gfid_seeds", "per seed run", ".2f"),
                              ("gfid_spread", "seed spread", ".2f"), ("class_acc", "class acc.", ".3f"),
                              ("kid", "KID", ".4f")]
# rFID: the reconstructions of the floor's held-out images scored exactly as samples are (pipeline.reconstruction),
# so it is the gFID a perfect DiT on that tokenizer would reach; "bound" flags a gFID below it
TOKENIZER_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("psnr", "PSNR", ".2f"), ("ssim", "SSIM", ".3f"),
                                   ("rfid", "rFID", ".2f"), ("recon_class_acc", "recon class acc.", ".3f"),
                                   *GFID_COLUMNS, ("bound", "gFID < rFID?", ""), ("gfid_cfg", "gFID CFG 3", ".2f"),
                                   ("gfid_cfg_seeds", "per seed run", ".2f"), ("bound_cfg", "CFG gFID < rFID?", "")]
# notebook 01 / Table 2: a gFID averages tokenizer x DiT seed runs, so each reconstruction number says whose it is
FIRST = "(first tokenizer seed)"
DILEMMA_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("psnr", f"PSNR {FIRST}", ".2f"),
                                 ("ssim", f"SSIM {FIRST}", ".3f"), ("rfid", f"rFID {FIRST}", ".2f"),
                                 ("rfid_seeds", "rFID per tokenizer seed", ".2f"),
                                 ("recon_class_acc", f"recon class acc. {FIRST}", ".3f"), *TOKENIZER_COLUMNS[5:]]
# `recon_by_seed`: each tokenizer's reconstruction in each tokenizer seed
RECON_SEED_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("tokenizer_seed", "tokenizer seed", ""),
                                    *TOKENIZER_COLUMNS[1:4], ("recon_class_acc", "recon class acc.", ".3f"),
                                    ("recon_kid", "recon KID", ".4f")]
ABLATION_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("psnr", f"PSNR {FIRST}", ".2f"),
                                  ("rfid", f"rFID {FIRST}", ".2f"), ("rfid_seeds", "rFID per tokenizer seed", ".2f"),
                                  ("recon_class_acc", f"recon class acc. {FIRST}", ".2f"), *GFID_COLUMNS,
                                  ("bound", "gFID < rFID?", ""), ("paper_gfid", "paper gFID", ".2f")]
SAMPLING_COLUMNS: list[Column] = [("setting", "setting", ""), ("gfid", "gFID", ".2f"),
                                  ("gfid_seeds", "per DiT seed", ".2f"), ("is", "IS", ".2f"),
                                  ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
                                  ("class_acc", "class acc.", ".2f"), ("kid", "KID", ".4f"),
                                  *BOUND_COLUMNS, ("bound", "gFID < rFID?", "")]


@dataclass(frozen=True)
class Table:
    """One table of the study, declared once: its rows, columns and tokenizers, and its place in report.md.

    `rows(study)` builds it (notebooks call the same functions); `columns` is how report.md (and the notebooks
    that show the same table) lay it out. `names` are its tokenizers, or a function of the preset's d ladder that
    gives them (`names_for`); `guided` tables also hold gFID with CFG 3; `seeds` tables measure every gFID in each
    of the study's seed runs. `notes(results)` are report lines
    after the table. A table whose rows are a dict of sweeps is shown as one sub-table per sweep.
    """

    key: str  # its key in `collect`'s dict and report.json
    title: str  # the report.md heading
    rows: Callable
    columns: list[Column]
    names: tuple[str, ...] | Callable[[V.Ladder], tuple[str, ...]] = ()
    guided: bool = False
    seeds: bool = False
    workers: bool = False  # rows(study, workers=...) runs t-SNE seeds in parallel
    also: str | None = None  # rows returns (rows, extra); extra is stored under this key
    notes: Callable[[dict], list[str]] = field(default=lambda results: [])
    verdicts: Callable | None = None  # verdicts(study, rows): verdict rows, stored as "<key>_verdicts"
    verdict_columns: list[Column] = field(default_factory=lambda: list(SINGLE_SEED_COLUMNS))
    jobs_by_name: bool = True  # False: its runs are not the tokenizers' default ones (jobs.py lists them itself)


def names_for(table: Table, ladder: V.Ladder) -> tuple[str, ...]:
    """The tokenizers a table needs on a preset's d ladder."""
    return table.names(ladder) if callable(table.names) else table.names


def _spearman_line(results: dict) -> list[str]:
    """The proxies' rank correlations with the full gFID, as a report line."""
    corr = results["spearman"]
    return ["", f"Spearman with the full gFID over {corr['n']} tokenizers: " + ", ".join(
        f"{k} {v:+.2f}" for k, v in corr.items() if k != "n")]


TABLES: list[Table] = [
    Table("dilemma", "The optimization dilemma (notebook 01)", dilemma, DILEMMA_COLUMNS, lambda ladder: ladder.rungs,
          guided=True, seeds=True),
    Table("table2", "Table 2: VF loss (notebook 02)", table2, DILEMMA_COLUMNS + [
        ("paper_rfid", "paper rFID", ".2f"), ("paper_psnr", "paper PSNR", ".2f"),
        ("paper_gfid", "paper gFID (B)", ".2f")], lambda ladder: ladder.table2, guided=True, seeds=True,
          notes=lambda results: ["", "![frontier](frontier.png)"]),
    Table("claims", "Does it show the paper? Each claim over the DiT seeds (notebooks 01, 02)", claims, CLAIM_COLUMNS),
    Table("table5", "Table 5: VF loss ablation", table5, ABLATION_COLUMNS, lambda ladder: ladder.table5,
          seeds=True, verdicts=lambda study, rows: ablation_claims(rows), verdict_columns=CLAIM_COLUMNS),
    Table("table4", "Table 4: which network to align with", table4, ABLATION_COLUMNS,
          lambda ladder: ladder.table4, seeds=True, verdicts=lambda study, rows: ablation_claims(rows),
          verdict_columns=CLAIM_COLUMNS),
    Table("vf_dose", "The VF weight's dose-response (notebook 02)", vf_dose, [
        ("tokenizer", "tokenizer", ""), ("vf_weight", "VF weight", "g"), ("psnr", "PSNR", ".2f"),
        ("rfid", "rFID", ".2f"), ("rfid_seeds", "rFID per tokenizer seed", ".2f"),
        ("recon_class_acc", "recon class acc.", ".2f"), *GFID_COLUMNS, ("bound", "gFID < rFID?", ""),
        ("vf_term_weight_seeds", "weight x adaptive, 2nd-half mean", ".3g"),
        ("vf_loss_seeds", "L_vf, 2nd-half mean", ".3g")],
          lambda ladder: ladder.vf_dose,
          seeds=True, verdicts=lambda study, rows: dose_claims(rows), verdict_columns=CLAIM_COLUMNS),
    Table("table6", "Table 6: latent uniformity (notebook 03)", table6, [
        ("tokenizer", "tokenizer", ""),
        *[c for k, m in METRICS.items() for c in ((k, m.label, m.fmt), (f"{k}_std", "+-", m.fmt))],
        *GFID_COLUMNS, *BOUND_COLUMNS, ("bound", "gFID < rFID?", ""),
        *[(f"paper_{k}", f"paper {m.label}", ".3f") for k, m in METRICS.items()]],
          lambda ladder: ladder.uniformity, seeds=True, workers=True, verdicts=table6_verdicts,
          verdict_columns=TABLE6_CLAIM_COLUMNS),
    Table("proxies", "Cheap gFID proxies", proxies, [
        ("tokenizer", "tokenizer", ""), ("gfid", "full gFID", ".1f"), *BOUND_COLUMNS,
        ("bound", "gFID < rFID?", ""), ("probe_gfid", "probe gFID", ".1f"),
        *[(f"probe_{k}", m.label, m.fmt) for k, m in METRICS.items()]], V.study_tokenizers, also="spearman",
          notes=_spearman_line),
    Table("table1", "Table 1: DiT -> LightningDiT (notebook 04)", table1, [
        ("change", "change", ""), ("gfid", "gFID", ".2f"), ("gfid_seeds", "per DiT seed", ".2f"),
        ("dit_loss", "final loss", ".3f"),
        ("class_acc", "class acc.", ".2f"), *BOUND_COLUMNS, ("bound", "gFID < rFID?", ""),
        ("paper_fid", "paper FID", ".2f")], lambda ladder: (ladder.dit_tokenizer,),
          notes=lambda results: ["", f"({V.TABLE1_PAPER_NOTE})"],
          verdicts=table1_verdicts),
    Table("sampling", "Sampling (notebook 05)", sampling, SAMPLING_COLUMNS, lambda ladder: (ladder.dit_tokenizer,),
          verdicts=sampling_verdicts),
    Table("convergence", "Fig. 4a/b: convergence, gFID against DiT steps", convergence, [
        ("tokenizer", "tokenizer", ""), ("seed", "seed run", ""), ("steps", "steps", ""),
        ("gfid_steps", "gFID at each step", ".1f"), ("class_acc_steps", "class acc. at each step", ".2f"),
        *BOUND_COLUMNS, ("below_rfid_steps", "steps with gFID < rFID", "")],
          lambda ladder: ladder.convergence, seeds=True, also="speedup", notes=_convergence_notes),
    Table("scaling", "Fig. 4c: DiT size at a fixed step budget", scaling, [
        ("tokenizer", "tokenizer", ""), ("size", "DiT", ""), ("params", "parameters", ","),
        ("gflops_step", "GFLOPs per step", ".2f"), ("steps", "training steps", ","), *GFID_COLUMNS,
        ("rfid", f"rFID {FIRST}", ".2f"),
        ("rfid_seeds", "rFID per tokenizer seed (each run's bound)", ".2f"),
        ("recon_class_acc", f"recon class acc. {FIRST}", ".2f"), ("bound", "gFID < rFID?", "")],
          lambda ladder: ladder.scaling, seeds=True, also="scaling_gap",
          notes=_scaling_notes),
]
TABLES += [
    Table("repa", "REPA beside VA-VAE: the 2 x 2 (notebook 07)", repa_rows, [
        ("tokenizer", "tokenizer + DiT", ""), ("rfid", "rFID", ".2f"), ("recon_class_acc", "recon class acc.", ".2f"),
        *GFID_COLUMNS, ("bound", "gFID < rFID?", ""),
        ("gfid_cfg", "gFID CFG 3", ".1f"), ("gfid_cfg_seeds", "per run", ".1f"), ("class_acc_cfg", "class acc. CFG 3",
                                                                                 ".2f")],
          V.repa_tokenizers, guided=True, seeds=True, verdicts=repa_verdicts, verdict_columns=CLAIM_COLUMNS,
          jobs_by_name=False),
    Table("repa_curves", "REPA beside VA-VAE: gFID against DiT steps", repa_curves, [
        ("tokenizer", "tokenizer + DiT", ""), ("seed", "run", ""), ("steps", "steps", ""),
        ("gfid_steps", "gFID at each step", ".1f"), ("class_acc_steps", "class acc. at each step", ".2f")],
          V.repa_tokenizers, seeds=True, jobs_by_name=False),
    Table("repa_depth", "REPA: which block to align (one run)", repa_depth, [
        ("tokenizer", "tokenizer", ""), ("block", "aligned block", ""), ("gfid", "gFID", ".1f"),
        ("class_acc", "class acc.", ".2f"), ("kid", "KID", ".4f")], lambda ladder: V.repa_tokenizers(ladder)[:1],
          verdicts=depth_verdicts, jobs_by_name=False),
    Table("repa_probe", "REPA: does a DiT hold the target without it? (a projector on frozen DiTs)", probe_rows, [
        ("tokenizer", "tokenizer", ""), ("dit", "DiT", ""), ("cos", "cos, held out", ".3f"),
        ("cos_seeds", "per run", ".3f"), ("cos_train", "cos, fit images", ".3f"),
        ("position_mean", "position mean", ".3f"), ("class_position_mean", "class mean (the label alone)", ".3f"),
        ("cos_rise", "rise in the fit's last tenth", "+.3f")],
          V.repa_tokenizers, seeds=True,
          verdicts=probe_verdicts, verdict_columns=PROBE_CLAIM_COLUMNS, jobs_by_name=False),
]
BY_KEY: dict[str, Table] = {t.key: t for t in TABLES}
