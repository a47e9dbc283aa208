"""The VF weight's dose-response on the ladder's top rung (notebook 02): reconstruction, generation and how much of
the encoder's gradient the weighted VF term makes, for VF weights 0, 0.05, 0.1 (the presets') and 0.5."""
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
    """One row per VF weight (`Ladder.vf_dose`, ascending): the tokenizer table's columns, the weight, and the
    weighted VF term's gradient over the reconstruction loss's at the encoder's last layer, averaged over the
    second half of training, per tokenizer seed (`vf_grad_ratio`, logged where the weight is adaptive)."""
    rows = tokenizer_rows(study, study.ladder.vf_dose)
    for row in rows:
        vf = study.config(row["name"]).tokenizer.vf
        row["vf_weight"] = vf.weight if vf.enabled else 0.0
        runs = [study.tokenizer_history(row["name"], *study.tokenizer_seeded(s)) for s in study.seeds]
        row["vf_grad_ratio_seeds"] = [late_mean(h, "vf_grad_ratio") for h in runs]
    return labelled(study, rows)
