"""The toy versions of the paper's tables, as lists of row dicts computed from a `Study` (cached runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..analysis.proxy import spearman
from ..analysis.uniformity import METRICS
from . import variants as V
from .runner import Study

CFG = "sample.cfg_scale=3.0"  # the guided column: CFG 3 (the toy's useful range, see notebook 05)
SMOKE_NOTE = ("smoke preset: this checks the plumbing only; every model, the FID feature network included (near "
              "chance accuracy), trains for seconds, so its numbers mean nothing (the lab preset gives the study's numbers)")


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
    """Table 6 at toy scale: each uniformity metric (mean +- std over t-SNE runs) and gFID, beside the paper's."""
    rows = []
    for name in V.UNIFORMITY:
        u = study.uniformity(name, workers=workers)
        paper = V.TABLE6_PAPER.get(name, {})
        rows.append({"name": name, "tokenizer": V.TOKENIZERS[name].label, "gfid": _gen(study, name),
                     **{k: u[k]["mean"] for k in METRICS}, **{f"{k}_std": u[k]["std"] for k in METRICS},
                     "n": u["n"], "runs": u["runs"], **{f"paper_{k}": paper.get(k) for k in METRICS}})
    return _rows(study, rows)


# proxy -> sign, so that a correlation of +1 means "ranks like gFID": +1 where lower is better (gFID, density CV,
# Gini), -1 for a uniformity metric where higher is more uniform (entropy)
PROXIES = {"probe_gfid": 1.0, **{f"probe_{k}": -1.0 if m.higher_is_uniform else 1.0 for k, m in METRICS.items()}}


def proxies(study: Study, names: Sequence[str] | None = None) -> tuple[list[dict], dict]:
    """Each tokenizer's cheap proxies beside its full gFID, and Spearman's rank correlation of each proxy.

    Returns (rows, {"n": tokenizers, proxy: rho}); a metric where higher is more uniform (entropy) is negated, so
    +1 always means "ranks like gFID".
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


Column = tuple[str, str, str]  # (row key, header, format)
TOKENIZER_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("psnr", "PSNR", ".2f"), ("ssim", "SSIM", ".3f"),
                                   ("rfid", "rFID", ".2f"), ("gfid", "gFID", ".1f"), ("gfid_cfg", "gFID CFG 3", ".1f")]
ABLATION_COLUMNS: list[Column] = [("tokenizer", "tokenizer", ""), ("psnr", "PSNR", ".2f"), ("rfid", "rFID", ".2f"),
                                  ("gfid", "gFID", ".1f"), ("paper_gfid", "paper gFID", ".2f")]
SAMPLING_COLUMNS: list[Column] = [("setting", "setting", ""), ("gfid", "gFID", ".1f"), ("is", "IS", ".2f"),
                                  ("precision", "precision", ".3f"), ("recall", "recall", ".3f")]


@dataclass(frozen=True)
class Table:
    """One table of the study, declared once: its rows, columns and tokenizers, and its place in report.md.

    `rows(study)` builds it (notebooks call the same functions); `columns` is how report.md (and the notebooks
    that show the same table) lay it out. `names` are its tokenizers; `guided` tables also hold gFID with CFG 3;
    `seeds` tables get a gFID column per extra seed of `reproduce --seeds`. `notes(results)` are report lines
    after the table. A table whose rows are a dict of sweeps is shown as one sub-table per sweep.
    """

    key: str  # its key in `collect`'s dict and report.json
    title: str  # the report.md heading
    rows: Callable
    columns: list[Column]
    names: tuple[str, ...] = ()
    guided: bool = False
    seeds: bool = False
    workers: bool = False  # rows(study, workers=...) runs t-SNE seeds in parallel
    also: str | None = None  # rows returns (rows, extra); extra is stored under this key
    notes: Callable[[dict], list[str]] = field(default=lambda results: [])

    def seed_keys(self) -> tuple[str, ...]:
        """The row keys repeated for each extra seed: gFID, and gFID with CFG 3 in a guided table."""
        return ("gfid", "gfid_cfg") if self.guided else ("gfid",)


def _spearman_line(results: dict) -> list[str]:
    """The proxies' rank correlations with the full gFID, as a report line."""
    corr = results["spearman"]
    return ["", f"Spearman with the full gFID over {corr['n']} tokenizers: " + ", ".join(
        f"{k} {v:+.2f}" for k, v in corr.items() if k != "n")]


TABLES: list[Table] = [
    Table("dilemma", "The optimization dilemma (notebook 01)", dilemma, TOKENIZER_COLUMNS, V.DILEMMA,
          guided=True, seeds=True),
    Table("table2", "Table 2: VF loss (notebook 02)", table2, TOKENIZER_COLUMNS + [
        ("paper_rfid", "paper rFID", ".2f"), ("paper_psnr", "paper PSNR", ".2f"),
        ("paper_gfid", "paper gFID (B)", ".2f")], V.TABLE2, guided=True, seeds=True,
          notes=lambda results: ["", "![frontier](frontier.png)"]),
    Table("table5", "Table 5: VF loss ablation", table5, ABLATION_COLUMNS, V.TABLE5, seeds=True),
    Table("table4", "Table 4: which network to align with", table4, ABLATION_COLUMNS, V.TABLE4, seeds=True),
    Table("table6", "Table 6: latent uniformity (notebook 03)", table6, [
        ("tokenizer", "tokenizer", ""),
        *[c for k, m in METRICS.items() for c in ((k, m.label, m.fmt), (f"{k}_std", "+-", m.fmt))],
        ("gfid", "gFID", ".1f"), *[(f"paper_{k}", f"paper {m.label}", ".3f") for k, m in METRICS.items()]],
          V.UNIFORMITY, workers=True),
    Table("proxies", "Cheap gFID proxies", proxies, [
        ("tokenizer", "tokenizer", ""), ("gfid", "full gFID", ".1f"), ("probe_gfid", "probe gFID", ".1f"),
        *[(f"probe_{k}", m.label, m.fmt) for k, m in METRICS.items()]], tuple(V.TOKENIZERS), also="spearman",
          notes=_spearman_line),
    Table("table1", "Table 1: DiT -> LightningDiT (notebook 04)", table1, [
        ("change", "change", ""), ("gfid", "gFID", ".1f"), ("dit_loss", "final loss", ".3f"),
        ("paper_fid", "paper FID", ".2f")], (V.DIT_TOKENIZER,), notes=lambda results: ["", f"({V.TABLE1_PAPER_NOTE})"]),
    Table("sampling", "Sampling (notebook 05)", sampling, SAMPLING_COLUMNS, (V.DIT_TOKENIZER,)),
]
BY_KEY: dict[str, Table] = {t.key: t for t in TABLES}


def jobs(study_overrides: Sequence[str] = (), family: str = "toy-XS"
         ) -> list[tuple[tuple[str, ...], list[tuple[str, str, tuple]]]]:
    """Every cached computation the tables need, grouped into independent jobs (for `reproduce --jobs`).

    A job is (study overrides, [(method, tokenizer, extra), ...]); calls inside a job run in order, jobs in any
    order once the first job (the DiT tokenizer's pipeline, which also trains the shared toy networks) is done.
    `family` is the preset DiT's size without its patch (`Study.dit_family`), for the Table 1 rows.
    """
    ov = tuple(study_overrides)
    guided = {n for t in TABLES if t.guided for n in t.names}
    first = [("generation", V.DIT_TOKENIZER, ())]
    out = [(ov, first)]
    for name in V.TOKENIZERS:
        calls = [("generation", name, ())]
        if name in guided:
            calls.append(("generation", name, (CFG,)))
        calls.append(("probe", name, ()))
        if name in BY_KEY["table6"].names:
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
    """The jobs of a repeat with another seed: the `seeds` tables' gFIDs (also with CFG 3 in a guided table)."""
    ov = (f"seed={seed}",)
    guided = list(dict.fromkeys(n for t in TABLES if t.seeds and t.guided for n in t.names))
    jobs = [(ov, [("generation", n, ()), ("generation", n, (CFG,))]) for n in guided]
    plain = dict.fromkeys(n for t in TABLES if t.seeds and not t.guided for n in t.names)
    return jobs + [(ov, [("generation", n, ())]) for n in plain if n not in guided]
