"""`reproduce`: run the whole toy study (optionally in parallel processes) and write a Markdown/PNG/JSON report."""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

from . import tables as T
from .jobs import study_jobs
from . import variants as V
from .runner import Study


def _run_job(preset: str, base: tuple[str, ...], device: str | None, threads: int, job) -> float:
    """Run one job's calls in order (in a worker process); returns its wall time in seconds."""
    import torch

    torch.set_num_threads(threads)
    overrides, calls = job
    study = Study(preset, (*base, *overrides), device=device, progress=False)
    t0 = time.perf_counter()
    for method, name, extra in calls:
        getattr(study, method)(name, *extra)
    return time.perf_counter() - t0


def _describe(job) -> str:
    """A short label of a job for the timing table: its overrides and each call's method and tokenizer."""
    overrides, calls = job
    text = "; ".join(f"{method} {name}" + (f" [{' '.join(extra)}]" if extra else "") for method, name, extra in calls)
    return (f"({' '.join(overrides)}) " if overrides else "") + text


def run_jobs(preset: str, overrides: Sequence[str], job_list: list, *, jobs: int = 1, device: str | None = None,
             progress: bool = True) -> list[dict]:
    """Run the study's jobs: the first one alone (it trains the shared toy networks), the rest on `jobs` workers.

    Returns one {"job", "seconds"} per job (seconds of that job's own process; cached calls take ~0).
    """
    from tqdm.auto import tqdm

    base = tuple(overrides)
    threads = max(1, (os.cpu_count() or 2) // max(jobs, 1))
    head, rest = job_list[0], job_list[1:]
    seconds = [_run_job(preset, base, device, os.cpu_count() or 2 if jobs > 1 else threads, head)]
    bar = tqdm(total=len(rest), desc="study jobs", disable=not progress)
    if jobs <= 1:
        for job in rest:
            seconds.append(_run_job(preset, base, device, threads, job))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            for fut in [pool.submit(_run_job, preset, base, device, threads, job) for job in rest]:
                seconds.append(fut.result())
                bar.update(1)
    bar.close()
    return [{"job": _describe(job), "seconds": round(t, 1)} for job, t in zip(job_list, seconds)]


def _md_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of rows: columns are (key, header, format)."""
    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (list, tuple)):  # one value per DiT seed
            return " / ".join("-" if v is None else format(v, fmt) if fmt else str(v) for v in value)
        return format(value, fmt) if fmt else str(value)

    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def show_table(rows: list[dict], columns: list[tuple[str, str, str]]):
    """A Markdown table for a notebook cell (IPython display object); plain text where IPython is absent."""
    text = _md_table(rows, columns)
    if getattr(rows, "preset", None) == "smoke":
        text = f"**{T.SMOKE_NOTE}**\n\n{text}"
    try:
        from IPython.display import Markdown
    except ImportError:
        return text
    return Markdown(text)


TOKENIZER_COLUMNS = T.TOKENIZER_COLUMNS  # notebooks import it from vavae_lab.study


def collect(preset: str = "lab", overrides: Sequence[str] = (), *, seeds: Sequence[int] | None = None,
            workers: int = 1, device: str | None = None, tables: Sequence[str] | None = None) -> dict:
    """The study's tables (`tables.TABLES`, or the keys in `tables`) from the cache (training whatever is missing),
    every gFID of the tokenizer tables over the DiT `seeds` (default `variants.SEEDS`), as one JSON-able dict."""
    study = Study(preset, overrides, device=device, progress=False, seeds=seeds or V.SEEDS)
    out = {"preset": preset, "overrides": list(overrides), "seeds": list(study.seeds),
           "tokenizer_seeds": bool(study.ladder.tokenizer_seeds), "floor": study.floor()}
    for table in T.TABLES:
        if tables and table.key not in tables:
            continue
        value = table.rows(study, workers=workers) if table.workers else table.rows(study)
        if table.also:
            out[table.key], out[table.also] = value
        else:
            out[table.key] = value
        if table.verdicts:
            out[f"{table.key}_verdicts"] = table.verdicts(study, out[table.key])
    return out


def write_report(results: dict, out_dir: str | Path, *, minutes: float | None = None) -> Path:
    """report.md, report.json and the figures (frontier, convergence) under out_dir."""
    from ..analysis.curves import plot_convergence, plot_frontier, plot_scaling  # bare Figures: no backend switch, notebook-safe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if results.get("preset") == "smoke":
        results = {"note": T.SMOKE_NOTE, **results}
    (out / "report.json").write_text(json.dumps(results, indent=1, default=float))
    if "table2" in results and "dilemma" in results:
        frontier = plot_frontier([{**r, "recon": r["rfid"]} for r in results["table2"] + results["dilemma"][:1]],
                                 "rfid", title="toy frontier: rFID vs gFID")
        frontier.savefig(out / "frontier.png", dpi=100, bbox_inches="tight")
    if results.get("convergence"):
        floor = (results.get("floor") or {}).get("fid")
        per_tokenizer = all(str(r.get("seed", "")).startswith("t") for r in results["convergence"])  # "t0d1" runs
        plot_convergence(results["convergence"], floor=floor, by_tokenizer_seed=per_tokenizer).savefig(
            out / "convergence.png", dpi=100, bbox_inches="tight")
    if results.get("repa_curves"):
        plot_convergence(results["repa_curves"], floor=(results.get("floor") or {}).get("fid"),
                         title="REPA beside VA-VAE: gFID against DiT steps").savefig(out / "repa_curves.png", dpi=100,
                                                                                      bbox_inches="tight")
    if results.get("scaling"):
        plot_scaling(results["scaling"]).savefig(out / "scaling.png", dpi=100, bbox_inches="tight")
    md = [f"# Toy study report (preset `{results['preset']}`)", ""]
    if results.get("note"):
        md += [f"> **{results['note']}**", ""]
    if minutes is not None:
        md.append(f"Wall time of this run: {minutes:.1f} min.\n")
    if results.get("seeds"):
        seeds = results["seeds"]
        runs = (f"tokenizer seeds {seeds} x DiT seeds {seeds} (each seed run trains its own tokenizer and DiT)"
                if results.get("tokenizer_seeds") else f"DiT seeds {seeds} (same tokenizer)")
        md.append(f"Every gFID of the tokenizer tables is the mean over {runs}, with each run and the spread beside "
                  "it.\n")
    if results.get("floor"):
        f = results["floor"]
        md.append(f"Real-vs-real floor: {f['n']} held-out real images scored like the samples give FID {f['fid']:.2f} "
                  "(the best any gFID here can be).\n")
    for table in (t for t in T.TABLES if t.key in results):
        md.append(f"## {table.title}")
        rows = results[table.key]
        if isinstance(rows, dict):  # sweeps: one sub-table each
            for key, sub in rows.items():
                md += [f"### {key}", _md_table(sub, table.columns), ""]
        else:
            md += [_md_table(rows, table.columns), *table.notes(results), ""]
        if results.get(f"{table.key}_verdicts"):
            md += ["### Verdicts", _md_table(results[f"{table.key}_verdicts"], table.verdict_columns), ""]
    if results.get("timing"):
        t = results["timing"]
        md += ["## Where the time went", f"{len(t['jobs'])} jobs, {t['jobs_total_seconds'] / 60:.1f} min of job time "
               f"({t['jobs_in_parallel']} in parallel); cached calls take ~0 s.", "",
               _md_table(t["jobs"], [("job", "job", ""), ("seconds", "seconds", ".1f")]), ""]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"


def reproduce(preset: str = "lab", out_dir: str | Path = "reproduce", overrides: Sequence[str] = (), *,
              jobs: int = 1, seeds: Sequence[int] | None = None, device: str | None = None, progress: bool = True,
              tables: Sequence[str] | None = None) -> Path:
    """Run (or load from the cache) the toy study (or only `tables`) and write the report; returns report.md's path."""
    t0 = time.perf_counter()
    study = Study(preset, overrides, progress=False, seeds=seeds or V.SEEDS)
    job_list = study_jobs(study, tables)
    timing = run_jobs(preset, overrides, job_list, jobs=jobs, device=device, progress=progress)
    results = collect(preset, overrides, seeds=study.seeds, workers=max(1, jobs), device=device, tables=tables)
    results["timing"] = {"jobs": timing, "jobs_total_seconds": round(sum(t["seconds"] for t in timing), 1),
                         "wall_seconds": round(time.perf_counter() - t0, 1), "jobs_in_parallel": jobs}
    return write_report(results, out_dir, minutes=(time.perf_counter() - t0) / 60)
