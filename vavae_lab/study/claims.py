"""The study's rule for a verdict, declared once: a difference over seeds, a single-seed change against a measured
spread, a speed-up read off two convergence curves, a size gap, and the readings beside every FID.

`study/tables.py` builds the rows; the functions here say what the rows show, so `report.md`, the README and the
notebooks print the same words.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import ConfigError


def below_bound(row: dict, key: str = "gfid") -> str:
    """A flag for a row whose gFID in some seed run is below its tokenizer's rFID scored as samples are (the best a
    perfect DiT on that tokenizer could reach): 'no' when none is, else which runs (look at it, do not believe it).
    Each run is held to its own tokenizer's rFID where the row has one per run (rfid_runs), else to the row's."""
    runs = row.get(f"{key}_seeds", [])
    seeds = [i for i, (g, b) in enumerate(zip(runs, _bounds(row, len(runs)))) if b is not None and g < b]
    return "no" if not seeds else f"below rFID in seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def _bounds(row: dict, n: int) -> list:
    """The rFID each of a row's n seed runs is held to: its own tokenizer's (rfid_runs), else the row's."""
    return row.get("rfid_runs") or [row.get("rfid")] * n


def above_bound(row: dict, key: str = "gfid") -> list[float]:
    """How far each seed run's gFID sits above the rFID it is held to (`below_bound`'s bound): what a better DiT on
    that tokenizer could still gain."""
    runs = row.get(f"{key}_seeds", [])
    return [g - b for g, b in zip(runs, _bounds(row, len(runs)))]


ABOVE_COLUMNS = [("tokenizer", "tokenizer", ""), ("above", "gFID - own tokenizer's rFID, per run", "+.2f")]


NOT_SHOWN = "not shown"  # every verdict but "shown" and "reversed" starts with it
OTHER_WAY = "the other way in every run"  # the sign holds, opposite to the claim (after NOT_SHOWN)
SAME_SIGN = "same sign in every run"  # the claim's sign holds, not beyond the spread in every run (after NOT_SHOWN)


def _beyond(diffs: Sequence[float], spread: float) -> str:
    """How many of the differences exceed the spread: "within the seed spread" when none, else "k of n runs"."""
    k = sum(abs(d) > spread for d in diffs)
    return "within the seed spread" if k == 0 else f"beyond the seed spread in {k} of {len(diffs)} runs"


def claim(text: str, low: dict, high: dict, key: str = "gfid", *, flip: bool = False) -> dict:
    """Does `high` have the larger `key` (gFID) than `low` in every DiT seed, each time by more than the seed spread?

    The study's rule for a difference: its sign holds in every seed run and it exceeds the larger of the two
    rows' seed spreads. Returns a table row: the claim, the difference per run, the spread and the verdict.
    The other readings run low -> high, or high -> low with `flip`: the order in which `text` names the rows.
    """
    diffs = [h - l for l, h in zip(low[f"{key}_seeds"], high[f"{key}_seeds"])]
    spread = max(low[f"{key}_spread"], high[f"{key}_spread"])
    if all(d > spread for d in diffs):
        verdict = "shown"
    elif all(d > 0 for d in diffs):
        verdict = f"{NOT_SHOWN}: {SAME_SIGN}, {_beyond(diffs, spread)}"
    elif all(d < -spread for d in diffs):
        verdict = "reversed"
    elif all(d < 0 for d in diffs):
        verdict = f"{NOT_SHOWN}: {OTHER_WAY}, {_beyond(diffs, spread)}"
    else:
        verdict = f"{NOT_SHOWN}: the sign changes between runs"
    return {"claim": text, "diff_seeds": diffs, "spread": spread, "verdict": verdict,
            "readings": other_readings(low, high, key, flip=flip)}


# the readings beside each FID (class accuracy: higher is better; KID: lower is better), by the FID's key
READINGS = {"gfid": ("class_acc", "kid"), "gfid_cfg": ("class_acc_cfg", "kid_cfg"),
            "rfid": ("recon_class_acc", "recon_kid")}


def _noise(row: dict, field: str) -> float | None:
    """One standard error of a reading: binomial for a class accuracy over its images, the subsets' spread for KID."""
    if field.startswith("kid") or field.endswith("kid"):
        return row.get(field.replace("kid", "kid_std", 1))
    n, p = row.get(f"{field}_n"), row[field]
    return math.sqrt(p * (1 - p) / n) if n else None


def other_readings(low: dict, high: dict, key: str = "gfid", *, flip: bool = False) -> str:
    """Do class accuracy and KID point the same way as the FID difference `high` - `low` (means, no seed rule)?

    The claim says `high` is worse by FID; a reading agrees when it also calls `high` worse, and is level when
    the two differ by less than two of their standard errors combined. Said for each reading the rows hold, so a
    table shows where FID and the others disagree instead of picking one; values low -> high (`flip`: high -> low)."""
    acc, kid = READINGS.get(key, (None, None))
    fid_worse = sum(high[f"{key}_seeds"]) > sum(low[f"{key}_seeds"])
    said = []
    for name, field, sign in (("class acc.", acc, -1), ("KID", kid, 1)):
        if not field or low.get(field) is None or high.get(field) is None:
            continue
        diff = high[field] - low[field]
        noise = [_noise(r, field) for r in (low, high)]
        if None not in noise and abs(diff) < 2 * math.hypot(*noise):
            verdict = "level"
        else:
            fid = "rFID" if key == "rfid" else "gFID"  # the FID the claim reads
            verdict = f"agrees with {fid}" if (sign * diff > 0) == fid_worse else f"DISAGREES with {fid}"
        first, then = (high, low) if flip else (low, high)
        said.append(f"{name} {verdict} ({first[field]:.3g} -> {then[field]:.3g})")
    return "; ".join(said) if said else "-"


def _tag(row: dict) -> str:
    """A row's tokenizer as tables show it."""
    return row.get("tokenizer", row["name"])


def dilemma_claims(rows: Sequence[dict], over: str = "DiT seeds") -> list[dict]:
    """The dilemma's two sides on notebook 01's rows (the ladder's low, middle and high d, in that order): rFID falls
    with d (over tokenizer seeds), gFID rises with d (over `over`: DiT seeds, or tokenizer x DiT seed pairs). A
    difference per seed is (larger d) - (smaller d) for gFID and the reverse for rFID, so a positive one is the
    paper's direction in both."""
    lo, mid, hi = rows
    steps = [(lo, hi), (lo, mid), (mid, hi)]  # the whole ladder first, then each step
    tags = [f"{_tag(a)} -> {_tag(b)}" for a, b in steps]
    heads = [f"(a) rFID improves with d: {tags[0]} (tokenizer seeds)", f"(b) gFID worsens with d: {tags[0]} ({over})"]
    a_side = [claim(heads[0] if i == 0 else f"    {t}", b, a, "rfid", flip=True)
              for i, ((a, b), t) in enumerate(zip(steps, tags))]
    b_side = [claim(heads[1] if i == 0 else f"    {t}", a, b) for i, ((a, b), t) in enumerate(zip(steps, tags))]
    out = [trend(a_side[0], a_side[1:], tags[1:]), *a_side[1:], trend(b_side[0], b_side[1:], tags[1:]), *b_side[1:]]
    if all("gfid_cfg_seeds" in r for r in rows):  # the same question with guidance (end points, judged as a trend)
        cfg = [claim(f"    with CFG 3: {tags[0]}" if i == 0 else "", a, b, "gfid_cfg") for i, (a, b) in enumerate(steps)]
        out.append(trend(cfg[0], cfg[1:], tags[1:]))
    for key, guide in (("class_acc", ""), ("class_acc_cfg", ", CFG 3")):  # the other reading, by the same rule
        if all(f"{key}_seeds" in r for r in rows):
            acc = [claim(f"    class accuracy falls with d{guide}, in points: {tags[0]}" if i == 0 else "",
                         _points(b, key), _points(a, key), "points") for i, (a, b) in enumerate(steps)]
            out.append(trend(acc[0], acc[1:], tags[1:]))
    return out


def _points(row: dict, key: str) -> dict:
    """A row's class accuracy per seed run in percentage points, as a row `claim` can compare ("points")."""
    return {"points_seeds": [100 * v for v in row[f"{key}_seeds"]], "points_spread": 100 * row[f"{key}_spread"]}


def trend(head: dict, steps: Sequence[dict], tags: Sequence[str]) -> dict:
    """The rule for a trend over three or more points: `head` (the claim between the end points) is shown only if
    every step between neighbours has the right sign in every seed; otherwise it says which step does not."""
    def runs(diffs):  # seed runs by their place in the row's per-run columns, counted from 0
        bad = [str(i) for i, d in enumerate(diffs) if d <= 0]
        return f"run{'s' if len(bad) > 1 else ''} {', '.join(bad)}"

    wrong = [f"{t} ({runs(s['diff_seeds'])})" for s, t in zip(steps, tags) if any(d <= 0 for d in s["diff_seeds"])]
    if wrong and (head["verdict"] == "shown" or SAME_SIGN in head["verdict"]):
        alone = head["verdict"].removeprefix(f"{NOT_SHOWN}: ")
        return {**head, "verdict": f"{NOT_SHOWN} as a trend: {'; '.join(wrong)} has the wrong sign (the end points "
                                   f"alone: {alone})"}
    return head


def _gain(plain: dict, vf: dict, key: str = "gfid") -> dict:
    """The VF gain per seed run (gFID without VF - with VF) as a row `claim` can compare."""
    diffs = [p - v for p, v in zip(plain[f"{key}_seeds"], vf[f"{key}_seeds"])]
    return {f"{key}_seeds": diffs, f"{key}_spread": max(plain[f"{key}_spread"], vf[f"{key}_spread"])}


def vf_claims(rows: Sequence[dict]) -> list[dict]:
    """The VF loss's effect on notebook 02's Table 2 rows (pairs without / with VF, d ascending): gFID without VF
    minus gFID with VF at the highest d, at the others, with CFG 3, and whether the gain grows with d (the paper's
    grows: 0.45 -> 6.80 -> 12.83 from f16d16 to f16d64)."""
    by = {r["name"]: r for r in rows}
    rungs = [r["name"] for r in rows if f"{r['name']}_vf" in by]
    top = rungs[-1]
    plain, vf = by[top], by[f"{top}_vf"]
    out = [claim(f"(c) VF improves {_tag(plain)}'s gFID: {_tag(plain)} -> {_tag(vf)}", vf, plain, flip=True)]
    for name in reversed(rungs[:-1]):
        out.append(claim(f"    VF at {_tag(by[name])}: {_tag(by[name])} -> {_tag(by[f'{name}_vf'])}",
                         by[f"{name}_vf"], by[name], flip=True))
    if "gfid_cfg_seeds" in plain:
        out.append(claim(f"    with CFG 3: {_tag(plain)} -> {_tag(vf)}", vf, plain, "gfid_cfg", flip=True))
    if len(rungs) > 1:
        low = rungs[0]
        out.append(claim(f"    the gain grows with d: {_tag(by[low])} -> {_tag(plain)}",
                         _gain(by[low], by[f"{low}_vf"]), _gain(plain, vf)))
    return out


def ablation_claims(rows: Sequence[dict]) -> list[dict]:
    """Each ablation row of Table 5 or 4 against the full VF loss (is it worse?) and against no VF (is it better?).
    `rows` are the table's: the plain rung first, its VF twin second (variants.Ladder.table5 / table4)."""
    base, full = rows[0], rows[1]
    out = []
    for row in rows[2:]:
        label = row.get("tokenizer", row["name"])
        out.append(claim(f"{label}: worse than the full loss ({_tag(full)} -> {label})", full, row))
        out.append(claim(f"    better than no VF ({_tag(base)} -> {label})", row, base, flip=True))
    return out


def dose_claims(rows: Sequence[dict]) -> list[dict]:
    """The VF weight's dose-response (`rows`: weight ascending from 0): does more weight lower gFID, and does it cost
    reconstruction (higher rFID; where the rows hold rFID per tokenizer seed)? Each a trend over every step
    (`trend`)."""
    tags = [f"weight {a['vf_weight']:g} -> {b['vf_weight']:g}" for a, b in zip(rows, rows[1:])]
    lo, hi = rows[0], rows[-1]
    gen = claim(f"more VF weight, lower gFID: {_tag(lo)} -> {_tag(hi)}", hi, lo, flip=True)
    out = [trend(gen, [claim("", b, a) for a, b in zip(rows, rows[1:])], tags)]
    if all("rfid_seeds" in r for r in rows):  # rFID over tokenizer seeds: where the ladder trains one per seed
        rec = claim(f"more VF weight, higher rFID: {_tag(lo)} -> {_tag(hi)}", lo, hi, "rfid")
        out.append(trend(rec, [claim("", a, b, "rfid") for a, b in zip(rows, rows[1:])], tags))
    return out


CLAIM_COLUMNS = [("claim", "claim", ""), ("diff_seeds", "difference per run", "+.2f"),
                 ("spread", "seed spread", ".2f"), ("verdict", "verdict", ""),
                 ("readings", "class acc. and KID beside the FID, in the claim's order (A -> B)", "")]


def single_seed_claim(text: str, before: float, after: float, yardstick: dict, key: str = "gfid") -> dict:
    """A change from `before` to `after` (two rows measured with one DiT seed each), judged by the study's rule.

    With one seed per row there is no sign to check in every seed, so only the rule's other half applies: the
    relative change after / before - 1 counts when it exceeds the relative seed spread of `yardstick`, a
    `seeded_gfid` row of a comparable DiT (its `key`_spread / `key`); otherwise it is unresolved. Relative,
    because the rows compared (notebook 04's ladder, notebook 05's sweeps) sit at very different gFIDs.
    Returns a table row: the comparison, both values, the change, the yardstick and the verdict.
    """
    if not before > 0 or yardstick.get(key) is None or not yardstick[key] > 0:
        raise ConfigError(f"single_seed_claim needs a positive `before` and yardstick[{key!r}], got {before} and "
                          f"{yardstick.get(key)}")
    change = after / before - 1
    spread = yardstick[f"{key}_spread"] / yardstick[key]
    if abs(change) <= spread:
        verdict = "unresolved (within the seed spread)"
    else:
        verdict = f"{'lower' if change < 0 else 'higher'} {key.replace('gfid', 'gFID')}"
    return {"claim": text, "before": before, "after": after, "change": change, "rel_spread": spread,
            "verdict": verdict}


def step_claim(text: str, before: dict, after: dict, yardstick: dict) -> dict:
    """One step of a ladder or sweep, `before` -> `after` (rows with gfid, and gfid_seeds when measured in several
    runs): with two or more runs each, the seed rule at the rows' own gFID level (`claim`: lower or higher in every
    run, by more than the spread); with one, `single_seed_claim` against the `yardstick`. Same columns either way."""
    if len(before.get("gfid_seeds") or ()) < 2 or len(after.get("gfid_seeds") or ()) < 2:
        return single_seed_claim(text, before["gfid"], after["gfid"], yardstick)
    seeded = claim(text, after, before)  # "shown": after is lower in every run, beyond the spread
    verdict = {"shown": "lower gFID", "reversed": "higher gFID"}.get(seeded["verdict"])
    if SAME_SIGN in seeded["verdict"] or OTHER_WAY in seeded["verdict"]:  # either way: the change says which
        verdict = f"unresolved (same sign in every run, {seeded['verdict'].split(', ', 1)[1]})"
    return {"claim": text, "before": before["gfid"], "after": after["gfid"],
            "change": after["gfid"] / before["gfid"] - 1, "rel_spread": seeded["spread"] / before["gfid"],
            "diff_seeds": [-d for d in seeded["diff_seeds"]],
            "verdict": verdict or "unresolved (the sign changes between runs)",
            "readings": other_readings(before, after)}  # read from -> to, as the row's columns are


def table1_claims(rows: Sequence[dict], yardstick: dict) -> list[dict]:
    """Table 1's verdicts: each step of the ladder against the row before it, then rows 1 -> n-2 (the recipe at a
    fixed token count, before the last step changes the token count), each a `step_claim`."""
    last = len(rows) - 1
    out = [step_claim(f"step {i}: {rows[i]['change']}", rows[i - 1], rows[i], yardstick) for i in range(1, len(rows))]
    out.append(step_claim(f"rows 1 → {last - 1}: the recipe at a fixed token count", rows[1], rows[last - 1],
                          yardstick))
    return out


def sampling_claims(sweeps: dict, yardstick: dict) -> list[dict]:
    """Notebook 05's verdicts (`step_claim`): Heun against Euler at equal NFE; no guidance against CFG 3 (the study's
    guided setting) and against the sweep's best scale where that is another; the guidance interval against
    guidance everywhere at the same scale and, since an interval is also less guidance, against the other plain
    scale whose samples' class accuracy is nearest the interval's (the weaker one on a tie; where the rows hold
    class accuracy); and the timestep shift against none."""
    def row(sweep, **match):
        return next(r for r in sweeps[sweep] if all(r.get(k) == v for k, v in match.items()))

    out = []
    for heun in (r for r in sweeps["sampler"] if r.get("method") == "heun"):
        euler = [r for r in sweeps["sampler"] if r.get("method") == "euler" and r.get("nfe") == heun["nfe"]]
        if euler:
            out.append(step_claim(f"Euler {euler[0]['steps']} steps -> Heun {heun['steps']} steps "
                                  f"({heun['nfe']} NFE each)", euler[0], heun, yardstick))
    plain, best = row("cfg", cfg=1.0), min(sweeps["cfg"], key=lambda r: r["gfid"])
    out.append(step_claim("no guidance -> CFG 3", plain, row("cfg", cfg=3.0), yardstick))
    if best["cfg"] not in (1.0, 3.0):
        out.append(step_claim(f"no guidance -> CFG {best['cfg']:g} (the sweep's best)", plain, best, yardstick))
    interval = row("interval", start=0.11)
    out.append(step_claim("CFG 3 everywhere -> only while t >= 0.11 (the paper samples with it)",
                          row("interval", start=0.0), interval, yardstick))
    others = [r for r in sweeps["cfg"] if r["cfg"] != 3.0]
    if interval.get("class_acc") is not None and others and all(r.get("class_acc") is not None for r in others):
        like = min(others, key=lambda r: (round(abs(r["class_acc"] - interval["class_acc"]), 6), r["cfg"]))
        out.append(step_claim(f"CFG {like['cfg']:g} everywhere -> CFG 3 only while t >= 0.11 (the other plain scale "
                              f"nearest in class acc.: {like['class_acc']:.2f} vs {interval['class_acc']:.2f})",
                              like, interval, yardstick))
    out.append(step_claim("no shift -> shift 0.3 (the paper samples with it)", row("shift", shift=1.0),
                          row("shift", shift=0.3), yardstick))
    return out


SINGLE_SEED_COLUMNS = [("claim", "comparison", ""), ("before", "from", ".2f"), ("after", "to", ".2f"),
                       ("change", "change", "+.0%"), ("diff_seeds", "change per run", "+.2f"),
                       ("rel_spread", "seed spread", ".0%"), ("verdict", "verdict", ""),
                       ("readings", "class acc. and KID beside gFID (from -> to)", "")]


def below_rfid(gfid: float, rfid: float) -> str:
    """`below_bound` for one gFID: 'no', or 'below rFID' when the samples beat the tokenizer's reconstructions."""
    return "below rFID" if gfid < rfid else "no"


def steps_to_reach(steps: Sequence[int], gfids: Sequence[float], target: float) -> tuple[float | None, str]:
    """(steps, how) a gFID curve needs to reach `target`: at its first point at or below it, interpolated linearly
    in log-steps from the point before ("interpolated"); the first snapshot itself when that one is already there
    ("at most": it may have got there earlier); (None, "never") when no point reaches it."""
    for i, (step, gfid) in enumerate(zip(steps, gfids)):
        if gfid <= target:
            if i == 0:
                return float(step), "at most"
            s0, g0 = steps[i - 1], gfids[i - 1]
            frac = (g0 - target) / (g0 - gfid)
            return math.exp(math.log(s0) + frac * (math.log(step) - math.log(s0))), "interpolated"
    return None, "never"


def speedup(steps_a: Sequence[int], gfid_a: Sequence[float], steps_b: Sequence[int], gfid_b: Sequence[float]) -> dict:
    """The paper's speed-up of curve B over curve A (Fig. 4): A's full budget over the steps B needs to reach the
    gFID A ends at. {"target", "steps", "speedup", "how", "reason", "range", "above_after"}: steps and speedup are None
    when B never reaches it (the reason says B's best); the speed-up is a lower bound when B is there at its first
    point. "range" is what the snapshots allow: B crossed the target somewhere between the snapshot before and the
    one at or below it, so the speed-up lies between budget / that one and budget / the one before, whatever the
    interpolation. "above_after" lists the snapshots from the crossing on where B is above A again (A's gFID at the
    same step), which the study's rule does not let a speed-up pass over."""
    target, budget = gfid_a[-1], steps_a[-1]
    need, how = steps_to_reach(steps_b, gfid_b, target)
    if need is None:
        reason = f"never reaches {target:.1f} in {steps_b[-1]} steps (its best: {min(gfid_b):.1f})"
        return {"target": target, "steps": None, "speedup": None, "how": how, "reason": reason, "range": None,
                "above_after": []}
    i = next(k for k, g in enumerate(gfid_b) if g <= target)
    span = (budget / steps_b[i], math.inf if i == 0 else budget / steps_b[i - 1])
    a_at = dict(zip(steps_a, gfid_a))
    above = [s for s, g in zip(steps_b[i:], gfid_b[i:]) if s in a_at and g > a_at[s]]
    reason = (f"already below {target:.1f} at its first snapshot (step {steps_b[0]}): at least {budget / need:.2f}x"
              if how == "at most" else "")
    return {"target": target, "steps": need, "speedup": budget / need, "how": how, "reason": reason, "range": span,
            "above_after": above}


def _run(seed) -> str:
    """A curve's seed as the verdicts name it: "DiT seed 1", or "run t1d0" (tokenizer seed 1, DiT seed 0)."""
    return f"DiT seed {seed}" if isinstance(seed, int) else f"run {seed}"


def seeded_speedup(rows: Sequence[dict], a: str, b: str) -> dict:
    """`speedup` of tokenizer b over a per DiT seed (convergence rows), their mean and spread, judged by the rule:
    not reported where b is above a again at a later snapshot in some seed; unresolved where the snapshots allow a
    speed-up of 1 in some seed (the crossing lies between the last two points, so the interpolation decides);
    otherwise by the seed rule (`claim`: each seed's speed-up - 1 positive and beyond the spread). None where a seed
    never gets there. "range_seeds" says what the snapshots allow in each seed."""
    curves = {(r["name"], r["seed"]): r for r in rows}
    seeds = sorted(s for n, s in curves if n == a and (b, s) in curves)
    per = [speedup(curves[(a, s)]["steps"], curves[(a, s)]["gfid_steps"], curves[(b, s)]["steps"],
                   curves[(b, s)]["gfid_steps"]) for s in seeds]
    label = {r["name"]: _tag(r) for r in rows}
    out = {"claim": f"{label.get(b, b)} reaches the final gFID of {label.get(a, a)}", "a": a, "b": b,
           "seeds": seeds, "target_seeds": [p["target"] for p in per], "steps_seeds": [p["steps"] for p in per],
           "speedup_seeds": [p["speedup"] for p in per], "range_seeds": [p["range"] for p in per],
           "reasons": [p["reason"] for p in per]}
    values = out["speedup_seeds"]
    if not per or None in values:
        never = [f"{_run(s)}: {p['reason']}" for s, p in zip(seeds, per) if p["speedup"] is None]
        return {**out, "speedup": None, "speedup_spread": None,
                "verdict": "not shown: " + ("; ".join(never) or "no seed has both curves")}
    spread = max(values) - min(values)
    out = {**out, "speedup": sum(values) / len(values), "speedup_spread": spread}
    above = [f"{_run(s)}: above again at step {', '.join(map(str, p['above_after']))}"
             for s, p in zip(seeds, per) if p["above_after"]]
    if above:
        return {**out, "verdict": "not reported: " + "; ".join(above)}
    loose = [f"{_run(s)}: {lo:.2f}x-{hi:.2f}x" for s, (lo, hi) in zip(seeds, out["range_seeds"]) if lo <= 1.0]
    if loose:
        return {**out, "verdict": "unresolved by the snapshots (the crossing lies between the last two, so the "
                                  "interpolation decides; what they allow: " + "; ".join(loose) + ")"}
    verdict = claim("", {"x_seeds": [1.0] * len(values), "x_spread": 0.0},
                    {"x_seeds": values, "x_spread": spread}, "x")["verdict"]
    first = any(p["how"] == "at most" for p in per)
    bound = " (a lower bound where a seed is there at its first snapshot)" if first else ""
    return {**out, "verdict": verdict + bound}


def scaling_gaps(rows: Sequence[dict], low: str, high: str) -> dict:
    """The gFID gap high-d - low-d (the tokenizers `high`, `low`) per DiT size and seed, and whether it shrinks from
    the smallest DiT to the largest by the trend rule (`claim`; Fig. 4c says it shrinks). Where the rows hold each
    run's class accuracy, the same for the class accuracy the high-d tokenizer's samples lose (`acc_gap`,
    `acc_claim`), and the gFID claim's readings say whether the two gaps move the same way."""
    by = {(r["name"], r["size"]): r for r in rows}
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    with_acc = all(by[(n, s)].get("class_acc_seeds") for n in (low, high) for s in sizes)
    gaps = []
    for size in sizes:
        lo, hi = by[(low, size)], by[(high, size)]
        gap = {"size": size}
        per_key = {"gap": [h - l for l, h in zip(lo["gfid_seeds"], hi["gfid_seeds"])]}
        if with_acc:  # class accuracy: higher is better, so the loss is low - high
            per_key["acc_gap"] = [l - h for l, h in zip(lo["class_acc_seeds"], hi["class_acc_seeds"])]
        for key, diffs in per_key.items():
            gap.update({key: sum(diffs) / len(diffs), f"{key}_seeds": diffs, f"{key}_spread": max(diffs) - min(diffs)})
        gaps.append(gap)
    tags = [f"{sizes[i]} -> {sizes[i + 1]}" for i in range(len(sizes) - 1)]

    def shrinks(text: str, key: str) -> dict:
        head = claim(text, gaps[-1], gaps[0], key)
        steps = [claim("", gaps[i + 1], gaps[i], key) for i in range(len(gaps) - 1)]
        return trend(head, steps, tags) if len(steps) > 1 else head

    tag = _tag(by[(high, sizes[0])])
    out = {"low": low, "high": high, "gaps": gaps,
           "claim": shrinks(f"the gap of {tag} shrinks from {sizes[0]} to {sizes[-1]}", "gap")}
    if with_acc:
        out["acc_claim"] = shrinks(f"the class accuracy {tag} loses shrinks from {sizes[0]} to {sizes[-1]}",
                                   "acc_gap")
        same = (gaps[-1]["gap"] < gaps[0]["gap"]) == (gaps[-1]["acc_gap"] < gaps[0]["acc_gap"])
        out["claim"]["readings"] = (f"class-acc. gap {'agrees' if same else 'DISAGREES'} with gFID "
                                    f"({gaps[0]['acc_gap']:+.3f} -> {gaps[-1]['acc_gap']:+.3f})")
    return out
