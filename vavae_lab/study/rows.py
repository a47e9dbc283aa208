"""What every study table is built from: rows labelled with their preset, gFID over the seed runs, the rFID bound."""
from __future__ import annotations

from typing import Iterable

from . import variants as V
from .claims import below_bound
from .runner import Study

CFG = "sample.cfg_scale=3.0"  # the guided column: CFG 3 (the toy's useful range, see notebook 05)


class Rows(list):
    """Table rows that remember their study's preset, so that showing smoke results says what they are."""

    def __init__(self, rows=(), preset: str | None = None):
        super().__init__(rows)
        self.preset = preset


def labelled(study: Study, rows) -> Rows:
    """`rows` labelled with the study's preset."""
    return Rows(rows, study.preset)


def seeded_gfid(study: Study, name: str, key: str = "gfid", *extra: str, runs=None) -> dict:
    """`key`: the mean gFID over the study's seed runs (`Study.seed_runs`: its DiT seeds, or tokenizer x DiT seed
    pairs; or the `runs` given); `key`_seeds: each run's; `key`_spread: max - min; and the mean of each other reading
    the results hold, e.g. the class accuracy of the samples under the toy classifier (class_acc, or class_acc_cfg
    for gfid_cfg; each run's in class_acc_seeds)."""
    results = [study.generation(name, *extra, *run) for run in (study.seed_runs() if runs is None else runs)]
    fids = [r["fid"] for r in results]
    out = {key: sum(fids) / len(fids), f"{key}_seeds": fids, f"{key}_spread": max(fids) - min(fids)}
    for reading in ("class_acc", "kid", "kid_std", "is", "precision", "recall"):  # the other readings, where held
        values = [r.get(reading) for r in results]
        if None not in values:
            out[key.replace("gfid", reading)] = sum(values) / len(values)
            if reading == "class_acc":  # each run's, and their spread (a reading the seed rule can judge)
                out[key.replace("gfid", reading) + "_seeds"] = values
                out[key.replace("gfid", reading) + "_spread"] = max(values) - min(values)
    out[key.replace("gfid", "class_acc") + "_n"] = sum(r.get("n", 0) for r in results)  # samples classified
    return out


def bound(study: Study, name: str) -> dict:
    """What no DiT on a variant's tokenizer can beat: its reconstructions scored as samples (rFID, class accuracy)."""
    rec = study.recon(name)
    return {"rfid": rec["rfid"], "recon_class_acc": rec["recon_class_acc"]}


def run_bounds(study: Study, name: str) -> dict:
    """`bound`, and where the ladder retrains the tokenizer per seed `per_run_recon`: each run's own bound."""
    return {**bound(study, name), **(per_run_recon(study, name) if study.ladder.tokenizer_seeds else {})}


def seeded_recon(study: Study, name: str) -> dict:
    """rfid_seeds / psnr_seeds: a variant's rFID and PSNR with its tokenizer trained once per study seed; their spread."""
    recs = recon_by_seed(study, [name])
    out = {}
    for key in ("rfid", "psnr"):
        values = [r[key] for r in recs]
        out.update({f"{key}_seeds": values, f"{key}_spread": max(values) - min(values)})
    return out


def recon_by_seed(study: Study, names: Iterable[str]) -> list[dict]:
    """One row per tokenizer and tokenizer seed: its reconstruction numbers (`Study.recon`) in that seed."""
    return [{"name": n, "tokenizer": study.label(n), "tokenizer_seed": s,
             **study.recon(n, *study.tokenizer_seeded(s))} for n in names for s in study.seeds]


def per_run_recon(study: Study, name: str) -> dict:
    """`seeded_recon`, and rfid_runs / psnr_runs: each seed run's own tokenizer's rFID and PSNR (the frontier's
    per-run markers; the bound each run's gFID is held to)."""
    out = seeded_recon(study, name)
    by_seed = {key: dict(zip(study.seeds, out[f"{key}_seeds"])) for key in ("rfid", "psnr")}
    tokenizer_of_run = [study.run_seeds(r)[0] for r in study.seed_runs()]
    for key in ("rfid", "psnr"):
        base = by_seed[key].get(study.base.seed, out[f"{key}_seeds"][0])
        out[f"{key}_runs"] = [by_seed[key].get(t, base) for t in tokenizer_of_run]
    return out


def tokenizer_rows(study: Study, names: Iterable[str], *, guided: bool = False, per_run: bool | None = None
                   ) -> list[dict]:
    """One row per tokenizer: d, VF, PSNR, SSIM, rFID, gFID over the seed runs (and with CFG 3 if `guided`); with
    `per_run` (default: when the ladder retrains the tokenizer per seed) each run's own tokenizer's rFID too."""
    per_run = study.ladder.tokenizer_seeds if per_run is None else per_run
    rows = []
    for name in names:
        v = V.TOKENIZERS[name]
        row = {"name": name, "tokenizer": study.label(name), "d": v.d, "vf": v.vf, **study.recon(name),
               **seeded_gfid(study, name)}
        if per_run:
            row.update(per_run_recon(study, name))
        row["bound"] = below_bound(row)
        if guided:
            row.update(seeded_gfid(study, name, "gfid_cfg", CFG))
            row["bound_cfg"] = below_bound(row, "gfid_cfg")
        rows.append(row)
    return labelled(study, rows)
