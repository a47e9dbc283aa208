"""Curves of the study: the reconstruction-generation frontier, training curves, gFID against DiT steps and size."""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from ..errors import ConfigError, DataError
from .plots import enable_notebook_display

enable_notebook_display()
_RECON_KEYS = {"rfid": "rFID (lower is better)", "psnr": "PSNR in dB (higher is better)"}


def _wrapped(title: str, width: int = 60) -> str:
    """A title broken into lines of at most `width` characters, so that a narrow panel does not cut it off."""
    return "\n".join(textwrap.wrap(title, width))


def _recon_value(row: Mapping, recon_key: str) -> float:
    """The reconstruction number of a frontier row: row[recon_key], else row['recon']."""
    if recon_key in row:
        return float(row[recon_key])
    if "recon" in row:
        return float(row["recon"])
    raise DataError(f"frontier row {dict(row)} has neither {recon_key!r} nor 'recon'")


def plot_frontier(rows: Sequence[Mapping], recon_key: str = "rfid", *, title: str | None = None) -> Figure:
    """The reconstruction-generation frontier (paper Fig. 1/2): reconstruction against gFID per latent size d.

    Each row is a dict with d, vf (bool), gfid and the reconstruction number under recon_key ('rfid' or
    'psnr') or 'recon'; an optional name. Points of one VF setting are joined in order of d and labelled
    'd<d>'; an arrow goes from the no-VF to the VF point of each d that has both. A row with gfid_seeds (one
    gFID per seed run; gfid is then their mean) also gets each run as a hollow marker, at the run's own
    reconstruction number where the row has one per run (`<recon_key>_runs`, e.g. its tokenizer seed's rFID; the
    filled marker then sits at their mean), else at the row's, joined to the mean, and tagged with `run_labels`
    (e.g. "t0d1") where the row has them.
    """
    if recon_key not in _RECON_KEYS:
        raise ConfigError(f"recon_key={recon_key!r} is not one of {sorted(_RECON_KEYS)}")
    if not rows:
        raise DataError("plot_frontier needs at least one row: dict(name=..., d=..., vf=..., recon=..., gfid=...)")
    points: dict[bool, dict[int, tuple[float, float]]] = {False: {}, True: {}}
    seeds: dict[bool, dict[int, list[tuple[float, float, str]]]] = {False: {}, True: {}}  # (recon, gFID, tag)
    for row in rows:
        missing = [k for k in ("d", "vf", "gfid") if k not in row]
        if missing:
            raise DataError(f"frontier row {dict(row)} misses {missing}; each row needs d, vf, gfid and "
                            f"{recon_key!r} (or 'recon')")
        runs = row.get(f"{recon_key}_runs") if row.get("gfid_seeds") else None
        x = sum(runs) / len(runs) if runs else _recon_value(row, recon_key)  # with runs: the mean over them
        points[bool(row["vf"])][int(row["d"])] = (x, float(row["gfid"]))
        if row.get("gfid_seeds"):
            xs = runs or [x] * len(row["gfid_seeds"])
            tags = row.get("run_labels") or [""] * len(row["gfid_seeds"])
            seeds[bool(row["vf"])][int(row["d"])] = [(float(x), float(g), t)
                                                     for x, g, t in zip(xs, row["gfid_seeds"], tags)]
    fig = Figure(figsize=(5.2, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = {False: ("no VF loss", "tab:red", "o"), True: ("VF loss", "tab:blue", "s")}
    tags: list[tuple[float, float, str, str]] = []  # (recon, gFID, text, colour), drawn once all are known
    for vf, by_d in points.items():
        if not by_d:
            continue
        label, color, marker = styles[vf]
        ds = sorted(by_d)
        xs, ys = [by_d[d][0] for d in ds], [by_d[d][1] for d in ds]
        ax.plot(xs, ys, marker=marker, color=color, label=label, linewidth=1.2)
        for d, x, y in zip(ds, xs, ys):
            ax.annotate(f"d{d}", (x, y), textcoords="offset points", xytext=(6, -12), ha="left", fontsize=9,
                        color=color, fontweight="bold", bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none",
                                                                  alpha=0.8))
            for rx, ry, tag in seeds[vf].get(d, []):  # each run, joined to the mean
                ax.plot([rx], [ry], linestyle="", marker=marker, markerfacecolor="none", color=color, markersize=5,
                        alpha=0.8)
                ax.plot([x, rx], [y, ry], color=color, alpha=0.4, linewidth=1)
                if tag:
                    tags.append((rx, ry, f"d{d} {tag}", color))
    _draw_run_tags(ax, tags)
    if any(seeds.values()):
        ax.plot([], [], linestyle="", marker="o", markerfacecolor="none", color="0.4",
                label="each seed run (filled: mean)")
    for d in sorted(set(points[False]) & set(points[True])):
        ax.annotate("", xy=points[True][d], xytext=points[False][d],
                    arrowprops=dict(arrowstyle="-|>", color="0.15", linestyle="--", linewidth=1.3, shrinkA=4,
                                    shrinkB=4, mutation_scale=14), zorder=5)
    ax.set_xlabel(_RECON_KEYS[recon_key] + (" →" if recon_key == "psnr" else " ←"))
    ax.set_ylabel("gFID (lower is better) ↓")
    ax.set_title(title or "Reconstruction vs. generation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _draw_run_tags(ax, tags: Sequence[tuple[float, float, str, str]]) -> None:
    """Each run's tag beside its marker; tags of one colour whose markers lie within 4 % of the axes' span of each
    other share one label ("d4 t1, d8 t1"), since side by side they would print over each other."""
    if not tags:
        return
    xs, ys = [t[0] for t in tags], [t[1] for t in tags]
    near_x, near_y = 0.04 * ((max(xs) - min(xs)) or 1.0), 0.04 * ((max(ys) - min(ys)) or 1.0)
    groups: list[list[tuple[float, float, str, str]]] = []
    for tag in tags:
        home = next((g for g in groups if g[0][3] == tag[3] and abs(g[0][0] - tag[0]) <= near_x
                     and abs(g[0][1] - tag[1]) <= near_y), None)
        if home is None:
            groups.append([tag])
        elif tag[2] not in [t[2] for t in home]:
            home.append(tag)
    for group in groups:
        x, y = max(t[0] for t in group), group[0][1]  # right of the rightmost marker
        ax.annotate(", ".join(t[2] for t in group), (x, y), textcoords="offset points", xytext=(4, -3),
                    fontsize=6.5, color=group[0][3], alpha=0.9)


def plot_curves(curves: Mapping[str, Sequence[Mapping]], key: str, *, title: str, ylabel: str | None = None,
                logy: bool = False) -> Figure:
    """Training curves: for each labelled run, `key` of its logged records (a history's "train" list) by step.

    Runs whose labels share the text before the first comma share a colour (e.g. "f4d32, seed 0" and
    "f4d32, seed 1"); later runs of a group are dashed.
    """
    if not curves:
        raise DataError("plot_curves needs at least one run")
    fig = Figure(figsize=(7.5, 3.8))
    ax = fig.subplots()
    colours, seen = {}, {}
    for label, records in curves.items():
        points = [(r["step"], r[key]) for r in records if key in r]
        if not points:
            raise DataError(f"run {label!r} logged no {key!r}; it logged {sorted(records[0]) if records else []}")
        group = label.split(",")[0]
        colours.setdefault(group, f"C{len(colours) % 10}")
        seen[group] = seen.get(group, -1) + 1
        steps, values = zip(*points)
        ax.plot(steps, values, color=colours[group], linestyle=("-", "--", ":", "-.")[seen[group] % 4], label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(_wrapped(title))  # the legend takes the right: a long title would be cut off
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plot_convergence(rows: Sequence[Mapping], *, floor: float | None = None, title: str | None = None,
                     by_tokenizer_seed: bool = False) -> Figure:
    """gFID against DiT training steps on a log-step axis (paper Fig. 4a/b): one line per tokenizer (colour) and
    DiT seed (line style); `floor` (the real-vs-real FID) as a grey horizontal line. The gFID axis is logarithmic
    when the values span 10x or more (toy curves start in the thousands).

    Each row is one curve, as the study's convergence table gives it: tokenizer (label), seed, steps, gfid_steps.
    `by_tokenizer_seed`: one panel per tokenizer seed (runs labelled "t<tokenizer seed>d<DiT seed>"), each
    tokenizer's rFID (the row's `rfid`) drawn as a dotted line in its colour: how close each DiT gets to its bound.
    """
    if not rows:
        raise DataError("plot_convergence needs at least one row: dict(tokenizer=..., seed=..., steps=[...], "
                        "gfid_steps=[...])")
    for row in rows:
        missing = [k for k in ("tokenizer", "steps", "gfid_steps") if k not in row]
        if missing or len(row.get("steps", ())) != len(row.get("gfid_steps", ())):
            raise DataError(f"convergence row {dict(row)} needs tokenizer and as many steps as gfid_steps")
    panels = {"": list(rows)}
    if by_tokenizer_seed:
        runs = [str(r.get("seed", "")) for r in rows]
        if not all(len(run) > 1 and run[0] == "t" and "d" in run for run in runs):
            raise DataError(f"by_tokenizer_seed needs runs labelled t<tokenizer seed>d<DiT seed>, got {runs}; "
                            "leave it off for a ladder that keeps one tokenizer per rung")
        panels = {}
        for row, run in zip(rows, runs):
            panels.setdefault(run.split("d")[0], []).append(row)
    # panels: a taller figure, each legend below its panel (inside, it hid the rFID lines' left ends)
    fig = Figure(figsize=(6.4, 4.2) if len(panels) == 1 else (10.5, 5.4), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colours = {t: f"C{i % 10}" for i, t in enumerate(dict.fromkeys(r["tokenizer"] for r in rows))}
    values = [g for row in rows for g in row["gfid_steps"] if g > 0] + ([floor] if floor and floor > 0 else [])
    for ax, (tok_seed, group) in zip(axes, panels.items()):
        seeds = sorted({r.get("seed", 0) for r in group}, key=str)
        ticks: set[int] = set()
        for row in group:
            seed = row.get("seed", 0)
            ax.plot(row["steps"], row["gfid_steps"], color=colours[row["tokenizer"]], marker="o", markersize=4,
                    linestyle=("-", "--", ":", "-.")[seeds.index(seed) % 4],
                    label=f"{row['tokenizer']}, " + (f"DiT seed {seed}" if isinstance(seed, int) else f"run {seed}"))
            ticks.update(int(s) for s in row["steps"])
        if by_tokenizer_seed:
            for tok, rfid in dict.fromkeys((r["tokenizer"], r["rfid"]) for r in group if r.get("rfid")):
                ax.axhline(rfid, color=colours[tok], linestyle=(0, (1, 2)), linewidth=1.2,
                           label=f"rFID of {tok} {rfid:.2f}")
                values.append(rfid)
        if floor is not None:
            ax.axhline(floor, color="0.5", linewidth=1, label=f"real vs real (floor) {floor:.2f}")
        whole = title or "Convergence: gFID against DiT training steps"  # panels: the figure's title, above them
        _finish_gfid_axes(ax, "DiT training steps", f"tokenizer seed {tok_seed[1:]}" if tok_seed else whole,
                          legend_below=by_tokenizer_seed)
        ax.set_xticks(sorted(ticks), [str(s) for s in sorted(ticks)])
    if len(panels) > 1:
        fig.suptitle(title or "Convergence: gFID against DiT training steps")
    if values and max(values) >= 10 * min(values):  # early gFIDs in the thousands would flatten the end
        axes[0].set_yscale("log")
        axes[0].set_ylabel("gFID (lower is better, log scale) ↓")
    for ax in axes:
        ax.minorticks_off()
        if ax is not axes[0]:
            ax.set_ylabel("")
    return fig


def _finish_gfid_axes(ax, xlabel: str, title: str, *, legend_below: bool = False) -> None:
    """The Fig. 4 panels' shared look: log x axis named `xlabel`, gFID on y, title, grid, legend (inside, or in two
    columns under the axis with `legend_below`)."""
    ax.set_xscale("log")
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("gFID (lower is better) ↓")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend_below:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, handlelength=4)
    else:
        ax.legend(fontsize=7)


def plot_scaling(rows: Sequence[Mapping], *, title: str | None = None) -> Figure:
    """gFID against DiT parameters on a log axis (paper Fig. 4c): one line per tokenizer through the seed means
    (filled markers), each DiT seed as a hollow marker, each DiT size and its parameters as the axis's tick
    labels. Where every row also holds class_acc (the samples' class accuracy), a second panel draws it the same
    way, for the reading the paper's figure has no place for.

    Each row is one tokenizer at one DiT size, as the study's scaling table gives it: tokenizer (label), size,
    params, gfid and optionally gfid_seeds, class_acc, class_acc_seeds.
    """
    if not rows:
        raise DataError("plot_scaling needs at least one row: dict(tokenizer=..., size=..., params=..., gfid=...)")
    for row in rows:
        missing = [k for k in ("tokenizer", "size", "params", "gfid") if k not in row]
        if missing:
            raise DataError(f"scaling row {dict(row)} lacks {', '.join(missing)}")
    with_acc = all(row.get("class_acc") is not None for row in rows)
    fig = Figure(figsize=(11.0, 4.2) if with_acc else (6.4, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if with_acc else 1, squeeze=False)[0]
    _scaling_panel(axes[0], rows, "gfid")
    _finish_gfid_axes(axes[0], "DiT parameters", "gFID" if with_acc else "DiT size at a fixed step budget: gFID per "
                                                                         "tokenizer")
    if with_acc:
        _scaling_panel(axes[1], rows, "class_acc")
        axes[1].set_xscale("log")
        axes[1].set_xlabel("DiT parameters (log scale)")
        axes[1].set_ylabel("class accuracy of the samples (higher is better) ↑")
        axes[1].set_title("class accuracy")
        axes[1].grid(True, alpha=0.3)
        fig.suptitle(_wrapped(title or "DiT size at a fixed step budget, per tokenizer", 100))
    elif title:
        axes[0].set_title(_wrapped(title))
    for ax in axes:
        _size_ticks(ax, rows)
    return fig


def _scaling_panel(ax, rows: Sequence[Mapping], key: str) -> None:
    """One tokenizer per line through the seed means of row[key], its seeds hollow."""
    for i, label in enumerate(dict.fromkeys(r["tokenizer"] for r in rows)):
        mine = sorted((r for r in rows if r["tokenizer"] == label), key=lambda r: r["params"])
        x, y = [r["params"] for r in mine], [r[key] for r in mine]
        ax.plot(x, y, color=f"C{i % 10}", marker="o", label=f"{label} (mean of the seed runs; hollow: each run)")
        for r in mine:
            seeds = r.get(f"{key}_seeds") or []
            ax.scatter([r["params"]] * len(seeds), seeds, facecolors="none", edgecolors=f"C{i % 10}", s=28)


def _size_ticks(ax, rows: Sequence[Mapping]) -> None:
    """The log parameter axis ticked at the first tokenizer's DiT sizes, each named with its parameters (labels
    beside the points crossed the lines)."""
    first = sorted((r for r in rows if r["tokenizer"] == rows[0]["tokenizer"]), key=lambda r: r["params"])
    ax.minorticks_off()
    ax.set_xticks([r["params"] for r in first], [f"{r['size']}\n{r['params'] / 1e6:.2f}M" for r in first])
