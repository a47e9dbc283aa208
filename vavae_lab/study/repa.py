"""REPA beside VA-VAE at toy scale (notebook 07): the 2 x 2 of tokenizer (plain, VF) x DiT (without, with REPA)
over the study's seed runs, its convergence curves, the sweep of the aligned block k, and the verdicts."""
from __future__ import annotations

from typing import Sequence

from ..diffusion.lightningdit import DIT_SIZES
from . import variants as V
from .claims import below_bound, claim, single_seed_claim
from .rows import CFG, labelled, per_run_recon, seeded_gfid
from .runner import Study

ARMS = (False, True)  # without, with REPA


def arm_label(study: Study, name: str, repa: bool) -> str:
    """A 2 x 2 row's name in tables: "f8d16 + VF + REPA"."""
    return study.label(name) + (" + REPA" if repa else "")


def repa_rows(study: Study) -> list[dict]:
    """The 2 x 2: for the plain high-d tokenizer and its VF twin, the DiT without and with REPA; gFID (no CFG and
    CFG 3), class accuracy and KID over the study's seed runs, each run held to its own tokenizer's rFID."""
    rows = []
    for name in V.repa_tokenizers(study.ladder):
        for on in ARMS:
            extra = study.repa() if on else ()
            row = {"name": name, "repa": on, "tokenizer": arm_label(study, name, on), **study.recon(name),
                   **seeded_gfid(study, name, "gfid", *extra), **seeded_gfid(study, name, "gfid_cfg", CFG, *extra)}
            if study.ladder.tokenizer_seeds:
                row.update(per_run_recon(study, name))
            row["bound"], row["bound_cfg"] = below_bound(row), below_bound(row, "gfid_cfg")
            rows.append(row)
    return labelled(study, rows)


def repa_claims(rows: Sequence[dict]) -> list[dict]:
    """The 2 x 2's questions by the study's seed rule: does REPA help the plain tokenizer, does VA-VAE, which helps
    more ("reversed": the other one), and do they stack (better than either alone); the last three with CFG 3 too.
    `rows` are `repa_rows`: plain, plain + REPA, VF, VF + REPA."""
    (plain, repa), (vf, both) = (rows[0], rows[1]), (rows[2], rows[3])

    def c(text, better, worse, key="gfid"):  # named worse -> better, the change the claim is about
        return claim(f"{text}: {worse['tokenizer']} -> {better['tokenizer']}" + (" (CFG 3)" if key != "gfid" else ""),
                     better, worse, key, flip=True)

    out = [c("REPA helps the plain tokenizer", repa, plain), c("VA-VAE helps it", vf, plain)]
    for key in ("gfid", "gfid_cfg"):
        out += [c("REPA beats VA-VAE", repa, vf, key),
                c("they stack: better than VA-VAE alone", both, vf, key),
                c("they stack: better than REPA alone", both, repa, key)]
    return out


def repa_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """The 2 x 2's verdicts (`repa_claims`) as table rows."""
    return labelled(study, repa_claims(rows))


def repa_curves(study: Study) -> list[dict]:
    """gFID and class accuracy after each of the study's curve steps, for every 2 x 2 arm and seed run."""
    rows = []
    for name in V.repa_tokenizers(study.ladder):
        for on in ARMS:
            for run in study.seed_runs():
                curve = study.convergence(name, *(study.repa() if on else ()), *run)
                tok, dit = study.run_seeds(run)
                rows.append({"name": name, "repa": on, "tokenizer": arm_label(study, name, on),
                             "seed": f"t{tok}d{dit}", "steps": [r["step"] for r in curve],
                             "gfid_steps": [r["fid"] for r in curve],
                             "class_acc_steps": [r.get("class_acc") for r in curve]})
    return labelled(study, rows)


def repa_depth(study: Study) -> list[dict]:
    """The sweep of the aligned block k on the plain high-d tokenizer (the base seed run): gFID and class accuracy
    without REPA and with it at each block of the preset's DiT."""
    name = V.repa_tokenizers(study.ladder)[0]
    rows = [{"block": "none", **_reading(study.generation(name))}]
    for k in range(1, DIT_SIZES[study.dit_size]["depth"] + 1):
        rows.append({"block": k, **_reading(study.generation(name, *study.repa(k)))})
    return labelled(study, [{**r, "tokenizer": study.label(name)} for r in rows])


def _reading(result: dict) -> dict:
    """A generation result's gFID, class accuracy and KID."""
    return {"gfid": result["fid"], "class_acc": result.get("class_acc"), "kid": result.get("kid")}


def depth_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """Each block k against no REPA, judged against the seed spread of REPA at the default block (`single_seed_claim`)."""
    plain, yardstick = rows[0]["gfid"], seeded_gfid(study, V.repa_tokenizers(study.ladder)[0], "gfid", *study.repa())
    return labelled(study, [single_seed_claim(f"no REPA -> REPA at block {r['block']}", plain, r["gfid"], yardstick)
                            for r in rows[1:]])


PROBED = {"init": "untrained", "plain": "trained without REPA", "repa": "trained with REPA"}  # the probed DiTs
# the probe's verdict columns: cosines, so three decimals (CLAIM_COLUMNS' one suits a gFID)
PROBE_CLAIM_COLUMNS = [("claim", "claim", ""), ("diff_seeds", "difference per run", "+.3f"),
                       ("spread", "run spread", ".3f"), ("verdict", "verdict", "")]


def probe_overrides(study: Study, arm: str) -> tuple[str, ...]:
    """A probed DiT's extra overrides: REPA's block, projector and VFM always (the probe reads them), its weight
    set to 0 for the DiT without REPA (then its key is the plain DiT's)."""
    return (*study.repa(), *(("dit.repa.weight=0",) if arm != "repa" else ()))


def probe_rows(study: Study) -> list[dict]:
    """What REPA's projector reaches when fitted alone on each frozen DiT's tokens after block k (the cosine to the
    VFM features on held-out images; analysis.repa_probe): per tokenizer of the 2 x 2, the DiT at initialisation,
    trained without REPA and with it, over the study's seed runs; beside them what predictions that ignore the
    image reach (each position's mean feature, and each class's: the label alone, which the DiT is given), and
    how much the held-out cosine still rose over the fit's last tenth (cos_rise: the fit had not settled if large)."""
    rows = []
    for name in V.repa_tokenizers(study.ladder):
        floor = study.alignment_floor(name, *probe_overrides(study, "plain"))  # the base run's images and features
        for arm in PROBED:
            method = study.alignment_at_init if arm == "init" else study.alignment
            results = [method(name, *probe_overrides(study, arm), *run) for run in study.seed_runs()]
            cos = [r["cos_test"] for r in results]
            rows.append({"name": name, "arm": arm, "dit": PROBED[arm], "tokenizer": study.label(name),
                         "cos": sum(cos) / len(cos),
                         "cos_seeds": cos, "cos_spread": max(cos) - min(cos),
                         "cos_train": sum(r["cos_train"] for r in results) / len(results),
                         "position_mean": floor["position_mean"], "class_position_mean": floor["class_position_mean"],
                         "cos_rise": sum(r["curve"][-1]["cos_test"] - r["curve"][-2]["cos_test"] for r in results)
                         / len(results)})
    return labelled(study, rows)


def probe_verdicts(study: Study, rows: list[dict]) -> list[dict]:
    """By the seed rule, per tokenizer: does training alone align block k beyond the initialisation, and does REPA
    align it beyond what training alone does (the cosine: higher is more aligned)?"""
    out = []
    for k in range(0, len(rows), len(PROBED)):
        init, plain, repa = rows[k:k + len(PROBED)]
        out += [claim(f"{plain['tokenizer']}: training alone aligns block k (untrained -> without REPA)", init, plain,
                      "cos"),
                claim(f"{plain['tokenizer']}: REPA aligns it further (without -> with REPA)", plain, repa, "cos")]
    return labelled(study, out)


def repa_calls(study_runs: list, names: Sequence[str], repa: tuple[str, ...], depths: Sequence[tuple[str, ...]],
               *, curves: bool, table: bool, sweep: bool, probe: bool = False) -> list[list[tuple[str, str, tuple]]]:
    """The jobs' calls of the REPA tables, one job per DiT run: the REPA arm's curve (which trains its DiT with the
    snapshots) and its runs with and without CFG, the plain arm's curve (its DiT again, for the snapshots), the
    block sweep on the plain tokenizer, and the probe of each DiT (at initialisation, without and with REPA)."""
    out = []
    for name in names:
        for arm in (repa, ()):
            for run in study_runs:
                calls = [("convergence", name, (*arm, *run))] if curves else []
                if table and arm:
                    calls += [("generation", name, (*arm, *run)), ("generation", name, (CFG, *arm, *run))]
                out.append(calls)
    if sweep:
        out += [[("generation", names[0], d)] for d in depths]
    if probe:
        off = (*repa, "dit.repa.weight=0")
        out += [[("alignment_floor", name, off)] for name in names]
        out += [[("alignment_at_init", name, (*off, *run)), ("alignment", name, (*off, *run)),
                 ("alignment", name, (*repa, *run))] for name in names for run in study_runs]
    return [calls for calls in out if calls]
