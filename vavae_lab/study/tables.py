"""The toy versions of the paper's tables, as lists of row dicts computed from a `Study` (cached runs)."""
from __future__ import annotations

from typing import Iterable, Sequence

from ..analysis.proxy import spearman
from . import variants as V
from .runner import Study

CFG = "sample.cfg_scale=3.0"  # the guided column: CFG 3 (the toy's useful range, see notebook 05)
SMOKE_NOTE = ("smoke preset: this checks the plumbing only; its FID feature network is at chance accuracy, so "
              "its numbers mean nothing (the lab preset gives the study's numbers)")


class Rows(list):
    """Table rows that remember their study's preset, so that showing smoke results says what they are."""

    def __init__(self, rows=(), preset: str | None = None):
        super().__init__(rows)
        self.preset = preset


def _rows(study: Study, rows) -> Rows:
    """`rows` labelled with the study's preset."""
    return Rows(rows, study.preset)


def _gen(study: Study, name: str, *extra: str) -> float:
    """gFID of a variant (no guidance unless `extra` says so)."""
    return study.generation(name, *extra)["fid"]


def tokenizer_rows(study: Study, names: Iterable[str], *, guided: bool = False) -> list[dict]:
    """One row per tokenizer: d, VF, PSNR, SSIM, rFID, gFID (and gFID with CFG 3 if `guided`)."""
    rows = []
    for name in names:
        v = V.TOKENIZERS[name]
        row = {"name": name, "tokenizer": v.label, "d": v.d, "vf": v.vf, **study.recon(name),
               "gfid": _gen(study, name)}
        if guided:
            row["gfid_cfg"] = _gen(study, name, CFG)
        rows.append(row)
    return _rows(study, rows)


def dilemma(study: Study) -> list[dict]:
    """Notebook 01: reconstruction and generation against latent size d (no VF)."""
    return tokenizer_rows(study, V.DILEMMA, guided=True)


def table2(study: Study) -> list[dict]:
    """Table 2 at toy scale: d16/d32 with and without VF, beside the paper's rFID, PSNR and gFID (B)."""
    rows = tokenizer_rows(study, V.TABLE2, guided=True)
    for row in rows:
        row["paper_rfid"], row["paper_psnr"], row["paper_gfid"] = V.TABLE2_PAPER[row["name"]]
    return rows


def _ablation(study: Study, names: Sequence[str], paper: dict) -> list[dict]:
    """gFID rows of an ablation table with the paper's gFID beside each."""
    rows = tokenizer_rows(study, names)
    for row in rows:
        row["paper_gfid"] = paper.get(row["name"])
    return rows


def table5(study: Study) -> list[dict]:
    """Table 5 at toy scale: the VF loss without mcos, without mdms, and with the paper's margins."""
    return _ablation(study, V.TABLE5, V.TABLE5_PAPER)


def table4(study: Study) -> list[dict]:
    """Table 4 at toy scale: aligning with a supervised, a masked-modelling, or a random-weights network."""
    return _ablation(study, V.TABLE4, V.TABLE4_PAPER)


def table6(study: Study, *, workers: int = 1) -> list[dict]:
    """Table 6 at toy scale: density CV, Gini, normalised entropy (mean +- std over t-SNE runs) and gFID."""
    rows = []
    for name in V.UNIFORMITY:
        u = study.uniformity(name, workers=workers)
        paper = V.TABLE6_PAPER.get(name, (None, None, None))
        rows.append({"name": name, "tokenizer": V.TOKENIZERS[name].label, "gfid": _gen(study, name),
                     **{f"{k}": u[k]["mean"] for k in ("density", "gini", "entropy")},
                     **{f"{k}_std": u[k]["std"] for k in ("density", "gini", "entropy")},
                     "n": u["n"], "runs": u["runs"],
                     "paper_density": paper[0], "paper_gini": paper[1], "paper_entropy": paper[2]})
    return _rows(study, rows)


PROXIES = {"probe_gfid": 1.0, "probe_density": 1.0, "probe_gini": 1.0, "probe_entropy": -1.0}


def proxies(study: Study, names: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Each tokenizer's cheap proxies beside its full gFID, and Spearman's rank correlation of each proxy.

    Returns (rows, {"n": tokenizers, proxy: rho}); entropy is negated so +1 always means "ranks like gFID".
    """
    names = list(names or V.TOKENIZERS)
    rows = [{"name": n, "tokenizer": V.TOKENIZERS[n].label, "gfid": _gen(study, n), **study.probe(n)} for n in names]
    gfid = [r["gfid"] for r in rows]
    corr = {"n": len(rows), **{k: sign * spearman([r[k] for r in rows], gfid) for k, sign in PROXIES.items()}}
    return _rows(study, rows), corr


def table1(study: Study) -> list[dict]:
    """Table 1 at toy scale: the DiT -> LightningDiT ladder, each row's gFID (no CFG) and final loss."""
    rows = []
    for i, (label, _) in enumerate(V.TABLE1):
        res = study.generation(V.DIT_TOKENIZER, *study.table1(i))
        rows.append({"row": i, "change": label, "gfid": res["fid"], "dit_loss": res.get("dit_loss"),
                     "paper_fid": V.TABLE1_PAPER[i]})
    return _rows(study, rows)


def sampling(study: Study) -> dict[str, list[dict]]:
    """Notebook 05's sweeps on the lab DiT: sampler and steps, CFG scale, CFG interval, timestep shift."""
    name = V.DIT_TOKENIZER

    def row(label, *extra, **fields):
        res = study.generation(name, *extra)
        return {"setting": label, **fields, "gfid": res["fid"], "is": res.get("is"),
                "precision": res.get("precision"), "recall": res.get("recall"), "seconds": res.get("seconds")}

    sweeps = {
        "sampler": [row(label, *extra) for label, extra in V.SAMPLER_SWEEP],
        "cfg": [row(f"CFG {s}", f"sample.cfg_scale={s}", cfg=s) for s in V.CFG_SWEEP],
        "interval": [row(f"CFG 3, t >= {t}", CFG, f"sample.cfg_interval_start={t}", start=t)
                     for t in V.INTERVAL_SWEEP],
        "shift": [row(f"shift {s}", f"sample.timestep_shift={s}", shift=s) for s in V.SHIFT_SWEEP],
    }
    return {k: _rows(study, v) for k, v in sweeps.items()}


def jobs(study_overrides: Sequence[str] = (), family: str = "toy-XS"
         ) -> list[tuple[tuple[str, ...], list[tuple[str, str, tuple]]]]:
    """Every cached computation the tables need, grouped into independent jobs (for `reproduce --jobs`).

    A job is (study overrides, [(method, tokenizer, extra), ...]); calls inside a job run in order, jobs in any
    order once the first job (the DiT tokenizer's pipeline, which also trains the shared toy networks) is done.
    `family` is the preset DiT's size without its patch (`Study.dit_family`), for the Table 1 rows.
    """
    ov = tuple(study_overrides)
    guided = set(V.DILEMMA) | set(V.TABLE2)
    first = [("generation", V.DIT_TOKENIZER, ())]
    out = [(ov, first)]
    for name in V.TOKENIZERS:
        calls = [("generation", name, ())]
        if name in guided:
            calls.append(("generation", name, (CFG,)))
        calls.append(("probe", name, ()))
        if name in V.UNIFORMITY:
            calls.append(("uniformity", name, ()))
        out.append((ov, calls))
    for i in range(len(V.TABLE1) - 1):
        out.append((ov, [("generation", V.DIT_TOKENIZER, V.table1_overrides(i, family))]))
    sweeps = [extra for _, extra in V.SAMPLER_SWEEP] + [(f"sample.cfg_scale={s}",) for s in V.CFG_SWEEP] + \
        [(CFG, f"sample.cfg_interval_start={t}") for t in V.INTERVAL_SWEEP] + \
        [(f"sample.timestep_shift={s}",) for s in V.SHIFT_SWEEP]
    for k in range(0, len(sweeps), 4):
        out.append((ov, [("generation", V.DIT_TOKENIZER, tuple(e)) for e in sweeps[k:k + 4]]))
    return out


def seed_jobs(seed: int) -> list[tuple[tuple[str, ...], list[tuple[str, str, tuple]]]]:
    """The jobs of a repeat with another seed: dilemma and Table 2 (with and without CFG), Tables 5 and 4 (without)."""
    ov = (f"seed={seed}",)
    guided = list(dict.fromkeys([*V.DILEMMA, *V.TABLE2]))
    jobs = [(ov, [("generation", n, ()), ("generation", n, (CFG,))]) for n in guided]
    return jobs + [(ov, [("generation", n, ())]) for n in dict.fromkeys([*V.TABLE5, *V.TABLE4]) if n not in guided]
