"""`reproduce --plan`: what a study run would compute and train, given what the cache and the pack already hold."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import pack
from ..checkpoint import list_checkpoints, snapshot_path
from ..convergence import curve_steps
from ..estimate import estimate_minutes, format_minutes
from ..keys import result_file, stage_dir
from ..paths import cache_dir
from ..runs import WEIGHTS_FILE
from . import variants as V
from .jobs import study_jobs
from .runner import Study

TRAINS_DIT = ("generation", "convergence", "alignment")  # the calls that need a trained DiT on a miss


def _result_where(stage: str, key: str, root: Path, manifest: dict) -> str | None:
    """'cache' or 'pack' where a result JSON is found, else None."""
    if result_file(stage, key, root).exists():
        return "cache"
    return "pack" if f"{stage}/{key}" in manifest else None


def _run_state(stage: str, run: Path, manifest: dict) -> tuple[str | None, int]:
    """('cache' | 'pack' | None, the step a resumed run starts from) of a tokenizer or DiT run folder."""
    if (run / WEIGHTS_FILE[stage]).exists():
        return "cache", 0
    entry = manifest.get(f"{stage}/{run.name}")
    if entry is not None and pack.has_weights(entry):
        return "pack", 0
    done = list_checkpoints(run)
    return None, done[-1][0] if done else 0


def _snapshots_missing(config, run: Path, where: list) -> list[int]:
    """The curve steps whose gFID is still to compute and whose snapshot the DiT run does not hold."""
    steps = curve_steps(config)
    return [s for s, w in zip(steps[:-1], where[:-1]) if w is None and not snapshot_path(run, s).exists()]


def plan(preset: str = "lab", overrides: Sequence[str] = (), *, seeds: Sequence[int] | None = None,
         tables: Sequence[str] | None = None) -> dict:
    """Every call `reproduce` would make (same jobs, same order) with what it still has to do: the results to
    compute, and the tokenizers and DiTs to train for them (each once, with its rough 2-core minutes from
    `estimate`; a run with checkpoints resumes from its last). Nothing is trained or restored."""
    study = Study(preset, overrides, progress=False, seeds=seeds or V.SEEDS)
    job_list = study_jobs(study, tables)
    manifest = {} if pack.retraining() else pack.read_manifest()["artifacts"]
    root = cache_dir("study")
    calls, runs = [], {}
    for job, (extra_overrides, job_calls) in enumerate(job_list):
        sub = Study(preset, (*overrides, *extra_overrides), progress=False, seeds=study.seeds)
        for method, name, extra in job_calls:
            keys = sub.result_keys(method, name, *extra)
            where = [_result_where(stage, key, root, manifest) for stage, key in keys]
            missing = where.count(None)
            train = []
            if missing:
                config = sub.config(name, *extra)
                for stage in ("tokenizer", "dit") if method in TRAINS_DIT else ("tokenizer",):
                    run = stage_dir(config, stage, root)
                    have, start = _run_state(stage, run, manifest)
                    if have is None:
                        runs.setdefault((stage, run.name), estimate_minutes(config, stage, start_step=start))
                        train.append(f"{stage} {run.name}" + (f" (from step {start})" if start else ""))
                    elif stage == "dit" and method == "convergence":
                        steps = _snapshots_missing(sub.config(name, *sub.snapshotted(), *extra), run, where)
                        if steps:  # trained without them: dit_snapshots trains it again up to the last one
                            runs.setdefault(("dit", run.name), estimate_minutes(config, "dit") * steps[-1]
                                            / config.dit.train.steps)
                            train.append(f"dit {run.name} again to step {steps[-1]} (snapshots)")
            calls.append({"job": job, "call": f"{method} {name}" + (f" [{' '.join(extra)}]" if extra else ""),
                          "results": len(keys), "missing": missing,
                          "found": ", ".join(sorted({w for w in where if w})) or "-", "train": train})
    to_train = {stage: sorted(k for s, k in runs if s == stage) for stage in ("tokenizer", "dit")}
    return {"preset": preset, "tables": list(tables or []), "jobs": len(job_list), "calls": calls,
            "results": sum(c["results"] for c in calls), "missing": sum(c["missing"] for c in calls),
            "train": to_train, "minutes": sum(runs.values())}


def format_plan(p: dict) -> str:
    """The plan as text: one line per call still to compute, then the totals and the rough training time."""
    lines = [f"reproduce --preset {p['preset']}" + (f" --tables {' '.join(p['tables'])}" if p["tables"] else "")
             + f": {p['jobs']} jobs, {len(p['calls'])} calls, {p['results']} results"]
    for c in p["calls"]:
        if c["missing"]:
            trains = f"; trains {', '.join(c['train'])}" if c["train"] else ""
            lines.append(f"  job {c['job']:>2}  {c['call']}: {c['missing']} of {c['results']} to compute{trains}")
    done = p["results"] - p["missing"]
    t, d = len(p["train"]["tokenizer"]), len(p["train"]["dit"])
    lines.append(f"{done} of {p['results']} results found (cache or pack), {p['missing']} to compute; "
                 f"{t} tokenizer(s) and {d} DiT(s) to train, roughly {format_minutes(p['minutes'])} of training "
                 "on a 2-core CPU (rough; sampling and scoring not included)")
    return "\n".join(lines)
