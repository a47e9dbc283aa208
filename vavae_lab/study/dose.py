"""The VF weight's dose-response on the ladder's top rung (notebook 02): reconstruction, generation, and what the
adaptive weight made of each weight, for VF weights 0, 0.05, 0.1 (the presets') and 0.5."""
from __future__ import annotations

from .rows import labelled, tokenizer_rows
from .runner import Study


def late_mean(history: dict, key: str, last: float = 0.5) -> float | None:
    """The mean of a logged training reading over the `last` fraction of the steps (None where none was logged)."""
    records = [r for r in history.get("train", []) if r.get(key) is not None]
    if not records:
        return None
    start = max(r["step"] for r in records) * (1 - last)
    late = [r[key] for r in records if r["step"] >= start]
    return sum(late) / len(late)


def vf_dose(study: Study) -> list[dict]:
    """One row per VF weight (`Ladder.vf_dose`, ascending): the tokenizer table's columns, the weight, and per
    tokenizer seed (where the ladder trains one per seed) over the second half of training the logged weight the VF
    term had (the weight times the adaptive factor ||grad L_rec|| / ||grad L_vf|| at the encoder's last layer) and
    L_vf itself.

    The adaptive factor sets the weighted VF gradient to `weight` x the reconstruction gradient whenever it is
    recomputed, so the weight fixes that share; what moves is the factor (how small L_vf's own gradient is)."""
    rows = tokenizer_rows(study, study.ladder.vf_dose)
    for row in rows:
        vf = study.config(row["name"]).tokenizer.vf
        row["vf_weight"] = vf.weight if vf.enabled else 0.0
        seeds = study.seeds if study.ladder.tokenizer_seeds else (study.base.seed,)  # the tokenizers it trained
        runs = [study.tokenizer_history(row["name"], *study.tokenizer_seeded(s)) for s in seeds]
        row["vf_term_weight_seeds"] = [late_mean(h, "vf_weight") if vf.enabled else None for h in runs]
        row["vf_loss_seeds"] = [late_mean(h, "vf") if vf.enabled else None for h in runs]
    return labelled(study, rows)
