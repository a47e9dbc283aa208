"""Issue 20: gFID along one DiT run from its snapshots, the speed-up read off two curves, and DiT size scaling."""
import json

import pytest
import torch

from vavae_lab import pipeline
from vavae_lab.checkpoint import list_snapshots, load_checkpoint
from vavae_lab.cli import main
from vavae_lab.config import apply_overrides
from vavae_lab.convergence import log_steps
from vavae_lab.estimate import dit_cost
from vavae_lab.keys import stage_key
from vavae_lab.study import Study
from vavae_lab.study import jobs as J
from vavae_lab.study import tables as T
from vavae_lab.study import variants as V
from vavae_lab.presets import SMOKE_STUDY
from vavae_lab.train.dit import train_dit

TINY = ("data.num_train=128", "data.num_test=64", "tokenizer.train.steps=4", "tokenizer.train.batch_size=8",
        "tokenizer.train.eval_images=32", "tokenizer.train.ckpt_every=4", "dit.train.steps=8",
        "dit.train.batch_size=16", "dit.train.ckpt_every=8", "sample.num_samples=32", "metrics.toy.feature_dim=2", "sample.batch_size=32",
        "sample.steps=2", "metrics.num_images=32", "latents.shard_size=128", "latents.stats_count=128")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny smoke study in its own cache (curve steps 1, 2, 4, 8), shared by the tests that train."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAVAE_LAB_DATA", str(tmp_path_factory.mktemp("convergence")))
        yield Study("smoke", TINY, progress=False)


@pytest.fixture(scope="module")
def runs(study, tmp_path_factory):
    """The d4 DiT trained into two folders: without snapshots (plain/) and with them (snap/)."""
    root = tmp_path_factory.mktemp("runs")
    config = study.config("d4")
    latents = study.latents("d4")
    train_dit(config, latents, root / "plain")
    train_dit(apply_overrides(config, {"dit.snapshots": [1, 2, 4]}), latents, root / "snap")
    return root


def _boom(*args, **kwargs):
    raise AssertionError("nothing should be trained or sampled again")


def test_snapshots_are_in_no_cache_key():
    for preset in ("smoke", "lab", "lab_classic", "lab_long"):
        s = Study(preset, progress=False)
        assert s.curve_steps[-1] == s.base.dit.train.steps and len(s.curve_steps) == s.ladder.curve_points
        for name in s.ladder.convergence:
            plain, snap = s.config(name), s.config(name, *s.snapshotted())
            assert snap.dit.snapshots == s.curve_steps[:-1] and plain.dit.snapshots == ()
            assert s.dit_key(snap) == s.dit_key(plain) and s.generation_key(snap, 8) == s.generation_key(plain, 8)
    assert Study("lab").curve_steps == (187, 375, 750, 1500, 3000, 6000) and log_steps(20) == (2, 5, 10, 20)
    assert Study("lab_classic").curve_steps == (75, 150, 300, 600)
    lab = Study("lab_classic").config("d32")
    keys = {stage_key(lab, "generation", n=2000, step=s) for s in (75, 150, 300)}
    assert len(keys) == 3 and stage_key(lab, "generation", n=2000) not in keys


def test_snapshots_leave_the_final_weights_unchanged(runs):
    plain = load_checkpoint(runs / "plain" / "dit.pt")
    snap = load_checkpoint(runs / "snap" / "dit.pt")
    for part in ("model", "ema"):
        assert all(torch.equal(plain[part][k], snap[part][k]) for k in plain[part])
    assert [s for s, _ in list_snapshots(runs / "snap")] == [1, 2, 4] and not list_snapshots(runs / "plain")
    kept = load_checkpoint(list_snapshots(runs / "snap")[0][1])
    assert kept["step"] == 1 and "ema" in kept and not {"model", "opt"} & set(kept)  # EMA weights only


def test_a_snapshot_is_the_run_stopped_at_its_step(study, runs, tmp_path):
    """Under the smoke DiT's constant learning rate, the snapshot after 4 of 8 steps is a 4-step run's EMA."""
    train_dit(apply_overrides(study.config("d4"), {"dit.train.steps": 4}), study.latents("d4"), tmp_path)
    four = load_checkpoint(tmp_path / "dit.pt")["ema"]
    kept = load_checkpoint(list_snapshots(runs / "snap")[-1][1])["ema"]
    assert all(torch.equal(four[k], kept[k]) for k in four)


def test_convergence_reuses_a_trained_dit_and_caches_every_point(study, monkeypatch):
    final = study.generation("d4")  # the DiT trained without snapshots, as the pack restores one
    run = study._dirs(study.config("d4"))["dit"]
    weights = (run / "dit.pt").read_bytes()
    curve = study.convergence("d4")
    assert [r["step"] for r in curve] == list(study.curve_steps) == [1, 2, 4, 8]
    assert curve[-1]["fid"] == final["fid"] and all(r["n"] == 32 and 0 <= r["class_acc"] <= 1 for r in curve)
    assert [s for s, _ in list_snapshots(run)] == [1, 2, 4] and not (run / "snapshot_run").exists()
    assert (run / "dit.pt").read_bytes() == weights  # retrained beside it for the snapshots; dit.pt never rewritten
    sidecars = [json.loads(p.read_text()) for p in (run.parents[1] / "results").glob("*.config.json")]
    assert sorted(c["key_args"].get("step", 8) for c in sidecars) == [1, 2, 4, 8]
    import vavae_lab.train.dit as train_module

    monkeypatch.setattr(train_module, "train_dit", _boom)
    monkeypatch.setattr(pipeline, "evaluate_dit", _boom)
    assert study.convergence("d4") == curve  # every point read back from the cache


def test_a_snapshot_rerun_stops_at_its_last_missing_step_and_restarts_one_that_went_past(study, monkeypatch,
                                                                                         tmp_path):
    """The rerun for snapshots trains only up to the last one it lacks; a leftover snapshot_run/ that went past a
    missing step without keeping it (an earlier, shorter snapshot list) is started again, not resumed."""
    import vavae_lab.train.dit as train_module

    extra = study.seeded(2)
    study.generation("d4", *extra)  # trained without snapshots
    config = study.config("d4", *extra)
    run = study._dirs(config)["dit"]
    weights = (run / "dit.pt").read_bytes()
    train_module.train_dit(config, study.latents("d4"), run / "snapshot_run", until=6)  # past step 1, keeps none
    calls = []
    real = train_module.train_dit
    monkeypatch.setattr(train_module, "train_dit", lambda *a, **k: calls.append(k.get("until")) or real(*a, **k))
    curve = study.convergence("d4", *extra)
    assert calls == [4] and [s for s, _ in list_snapshots(run)] == [1, 2, 4] and len(curve) == 4
    assert not (run / "snapshot_run").exists() and (run / "dit.pt").read_bytes() == weights
    real(apply_overrides(config, {"dit.snapshots": [1, 2, 4]}), study.latents("d4"), tmp_path)  # the whole run
    for (_, whole), (_, stopped) in zip(list_snapshots(tmp_path), list_snapshots(run)):
        a, b = load_checkpoint(whole)["ema"], load_checkpoint(stopped)["ema"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_dit_is_trained_once_with_its_snapshots(study, monkeypatch):
    import vavae_lab.train.dit as train_module

    calls = []
    real = train_module.train_dit
    monkeypatch.setattr(train_module, "train_dit", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    curve = study.convergence("d4", *study.seeded(1))
    run = study._dirs(study.config("d4", *study.seeded(1)))["dit"]
    assert calls == [run] and [s for s, _ in list_snapshots(run)] == [1, 2, 4] and len(curve) == 4
    assert study.generation("d4", *study.seeded(1))["fid"] == curve[-1]["fid"]


def test_speedup_reads_the_steps_to_reach_the_baselines_final_gfid():
    steps = [1, 2, 4, 8]
    base = [100.0, 80.0, 60.0, 50.0]
    sp = T.speedup(steps, base, steps, [90.0, 60.0, 40.0, 30.0])  # 50 lies halfway from 60 (step 2) to 40 (step 4)
    assert sp["how"] == "interpolated" and sp["steps"] == pytest.approx(2 * 2 ** 0.5)
    assert sp["speedup"] == pytest.approx(8 / (2 * 2 ** 0.5)) and sp["target"] == 50.0
    first = T.speedup(steps, base, steps, [45.0, 40.0, 35.0, 30.0])
    assert first["how"] == "at most" and first["speedup"] == 8.0 and "at least" in first["reason"]
    never = T.speedup(steps, base, steps, [120.0, 110.0, 100.0, 90.0])
    assert never["steps"] is None and never["speedup"] is None
    assert "never reaches 50.0" in never["reason"] and "best: 90.0" in never["reason"]

    def curve(name, seed, gfids):
        return {"name": name, "seed": seed, "steps": steps, "gfid_steps": gfids}

    a, b = V.LADDERS[4].speedup
    rows = [curve(a, 0, base), curve(a, 1, [100.0, 80.0, 60.0, 52.0]),
            curve(b, 0, [90.0, 60.0, 40.0, 30.0]), curve(b, 1, [90.0, 62.0, 45.0, 30.0])]
    both = T.seeded_speedup(rows, a, b)
    assert both["seeds"] == [0, 1] and all(v > 2 for v in both["speedup_seeds"])
    assert both["speedup_spread"] == pytest.approx(max(both["speedup_seeds"]) - min(both["speedup_seeds"]))
    assert both["verdict"] == "shown"
    rows[3] = curve(b, 1, [120.0, 110.0, 100.0, 90.0])
    one_never = T.seeded_speedup(rows, a, b)
    assert one_never["speedup"] is None and one_never["speedup_seeds"][1] is None
    assert one_never["verdict"].startswith("not shown: DiT seed 1: never reaches 52.0")


def test_a_speedup_needs_the_curve_to_stay_below_and_a_crossing_the_snapshots_resolve():
    steps = [1, 2, 4, 8]
    a, b = V.LADDERS[4].speedup

    def rows(*b_curves):
        base = [100.0, 80.0, 60.0, 50.0]
        return [r for seed, gfids in enumerate(b_curves) for r in (
            {"name": a, "seed": seed, "steps": steps, "gfid_steps": base},
            {"name": b, "seed": seed, "steps": steps, "gfid_steps": gfids})]

    # behind at every snapshot but the last: the crossing lies between steps 4 and 8, so 1x-2x is all they allow
    late = T.seeded_speedup(rows([110.0, 90.0, 70.0, 45.0], [105.0, 85.0, 65.0, 44.0]), a, b)
    assert all(v > 1 for v in late["speedup_seeds"]) and late["range_seeds"] == [(1.0, 2.0), (1.0, 2.0)]
    assert late["verdict"].startswith("unresolved by the snapshots") and "DiT seed 0: 1.00x-2.00x" in late["verdict"]
    # below the target at step 2, then above the baseline again at step 4: no speed-up is reported
    back = T.seeded_speedup(rows([90.0, 50.0, 65.0, 40.0], [90.0, 48.0, 45.0, 40.0]), a, b)
    assert back["verdict"] == "not reported: DiT seed 0: above again at step 4"
    assert T.speedup(steps, [100.0, 80.0, 60.0, 50.0], steps, [90.0, 50.0, 65.0, 40.0])["above_after"] == [4]


def test_flops_and_parameters_grow_with_the_dit_size():
    config = Study("smoke", progress=False).config("d32")
    costs = [dit_cost(apply_overrides(config, [f"dit.model.size={f}/1"])) for f in V.SCALING_SIZES]
    assert all(c["params"] > 0 and c["flops_per_step"] > 0 for c in costs)
    assert [c["params"] for c in costs] == sorted({c["params"] for c in costs})
    assert [c["flops_per_step"] for c in costs] == sorted({c["flops_per_step"] for c in costs})
    double = dit_cost(apply_overrides(config, {"dit.train.batch_size": 2 * config.dit.train.batch_size}))
    assert double["flops_per_step"] == 2 * costs[0]["flops_per_step"]  # counted per batch: exactly linear in it


def test_jobs_train_each_curve_before_its_gfids_and_every_size_once():
    jobs = J.jobs(tables=["convergence", "scaling"], seeds=(0, 1))
    calls = [c for _, job in jobs for c in job]
    assert len(calls) == len(set(calls))
    for _, job in jobs[:len(V.LADDERS[4].convergence)]:
        methods = [m for m, _, _ in job]
        assert methods[:2] == ["convergence"] * 2 and set(methods[2:]) <= {"generation", "recon"}
    sized = {(n, e[0]) for m, n, e in calls if m == "generation" and e and e[0].startswith("dit.model.size")}
    assert sized == {(n, f"dit.model.size={f}/1") for n in V.LADDERS[4].scaling for f in V.SCALING_SIZES[1:]}


@pytest.mark.slow
def test_reproduce_builds_both_tables_and_the_figure(study, tmp_path, monkeypatch):
    from vavae_lab.study import reproduce

    monkeypatch.setattr(V, "SCALING_SIZES", ("toy-XS", "toy-S"))
    monkeypatch.setattr("os.cpu_count", lambda: 1)  # jobs on one torch thread, as conftest runs the suite
    path = reproduce("smoke", tmp_path, TINY, tables=["convergence", "scaling"], progress=False)
    results = json.loads((tmp_path / "report.json").read_text())
    assert len(results["convergence"]) == len(V.LADDERS[4].convergence) * 2 and results["speedup"]["seeds"] == [0, 1]
    assert [r["size"] for r in results["scaling"]] == ["toy-XS/1", "toy-S/1"] * 2
    assert [g["size"] for g in results["scaling_gap"]["gaps"]] == ["toy-XS/1", "toy-S/1"]
    rows, _ = T.scaling(study, ["toy-S"])  # a chosen subset of sizes, read from the same cache
    assert [r["size"] for r in rows] == ["toy-S/1"] * 2
    assert [r["gfid"] for r in rows] == [r["gfid"] for r in results["scaling"] if r["size"] == "toy-S/1"]
    text = path.read_text()
    assert "## Fig. 4a/b" in text and "## Fig. 4c" in text and "Speed-up:" in text
    assert (tmp_path / "convergence.png").stat().st_size > 1000


def test_evaluate_checkpoints_cli(study, runs, capsys, tmp_path, monkeypatch):
    overrides = [*SMOKE_STUDY, *TINY, *V.TOKENIZERS["d4"].overrides]

    def fails(*argv):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: ")
        return err

    assert "--steps 0 9: each step must lie between 1 and" in fails("evaluate-checkpoints", "--preset", "smoke",
                                                                     *overrides, "--steps", "0", "4", "9")
    assert "--dit" in fails("evaluate-checkpoints", "--dit", tmp_path / "nowhere")
    err = fails("evaluate-checkpoints", "--dit", runs / "plain", "--steps", "2")
    assert "--steps 2:" in err and "kept no snapshot at step 2" in err
    out = tmp_path / "curve.json"
    assert main(["evaluate-checkpoints", "--dit", str(runs / "snap"), "--n", "16", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["steps"] == [1, 2, 4, 8] and [r["n"] for r in saved["results"]] == [16] * 4
    monkeypatch.setattr(pipeline, "evaluate_dit", _boom)  # the cache path reads what the study computed
    study.convergence("d4")
    assert main(["evaluate-checkpoints", "--preset", "smoke", *overrides, "--steps", "2", "8"]) == 0
    printed = capsys.readouterr().out
    assert f"step 2: gFID {study.convergence('d4')[1]['fid']:.2f}" in printed


def test_convergence_figure_has_a_log_step_axis_one_line_per_curve_and_the_floor():
    from vavae_lab.analysis.curves import plot_convergence
    from vavae_lab.errors import DataError

    rows = [{"tokenizer": t, "seed": s, "steps": [75, 150, 300, 600], "gfid_steps": [90.0, 70.0, 60.0, 55.0]}
            for t in ("f4d32", "f4d32 + VF") for s in (0, 1)]
    ax = plot_convergence(rows, floor=3.0).axes[0]
    assert ax.get_xscale() == "log" and "steps" in ax.get_xlabel() and "gFID" in ax.get_ylabel() and ax.get_title()
    assert len(ax.get_lines()) == 5 and ax.get_lines()[-1].get_ydata()[0] == 3.0  # 4 curves + the floor
    assert ax.get_lines()[0].get_linestyle() != ax.get_lines()[1].get_linestyle()  # seeds differ in line style
    assert ax.get_yscale() == "log"  # the floor (3.0) is 30x below the curves
    assert plot_convergence(rows).axes[0].get_yscale() == "linear"  # 55-90: a linear axis reads best
    with pytest.raises(DataError):
        plot_convergence([])
    with pytest.raises(DataError):
        plot_convergence([{"tokenizer": "x", "steps": [1, 2], "gfid_steps": [1.0]}])


def test_convergence_figure_by_tokenizer_seed_has_a_panel_per_tokenizer_seed_with_each_tokenizers_rfid():
    from vavae_lab.analysis.curves import plot_convergence
    from vavae_lab.errors import DataError

    rows = [{"tokenizer": t, "seed": f"t{ts}d{ds}", "steps": [100, 200, 400], "gfid_steps": [30.0, 9.0, 3.0 + ts],
             "rfid": 1.0 + ts + (t == "f8d16")} for ts in (0, 1) for t in ("f8d4", "f8d16") for ds in (0, 1)]
    fig = plot_convergence(rows, floor=0.1, title="curves", by_tokenizer_seed=True)
    axes = fig.axes
    assert len(axes) == 2 and [a.get_title() for a in axes] == ["tokenizer seed 0", "tokenizer seed 1"]
    assert fig.get_suptitle() == "curves"
    for ts, ax in enumerate(axes):
        curves, flat = ax.get_lines()[:4], ax.get_lines()[4:]
        assert [max(c.get_ydata()) for c in curves] == [30.0] * 4 and min(curves[0].get_ydata()) == 3.0 + ts
        assert [f.get_ydata()[0] for f in flat] == [1.0 + ts, 2.0 + ts, 0.1]  # each tokenizer's rFID, the floor
        assert flat[0].get_color() == curves[0].get_color() != flat[1].get_color() == curves[2].get_color()
    assert axes[0].get_yscale() == axes[1].get_yscale() == "log"
    fig.canvas.draw()  # each legend sits below its panel, clear of the rFID lines it names
    assert all(ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0 for ax in axes)
    assert len(plot_convergence(rows).axes) == 1  # one panel unless asked
    with pytest.raises(DataError, match="by_tokenizer_seed"):
        plot_convergence([{**rows[0], "seed": 0}], by_tokenizer_seed=True)


def test_scaling_figure_has_one_line_per_tokenizer_ordered_by_parameters_and_every_seed():
    from vavae_lab.analysis.curves import plot_scaling
    from vavae_lab.errors import DataError

    rows = [{"tokenizer": t, "size": s, "params": p, "gfid": g, "gfid_seeds": [g - 1, g + 1]}
            for t, base in (("f4d4", 50.0), ("f4d32", 90.0))
            for s, p, g in (("toy-M/1", 1.9e6, base - 20), ("toy-XS/1", 1.8e5, base))]
    ax = plot_scaling(rows).axes[0]
    assert ax.get_xscale() == "log" and "parameters" in ax.get_xlabel() and "gFID" in ax.get_ylabel()
    lines = ax.get_lines()
    assert len(lines) == 2 and list(lines[0].get_xdata()) == [1.8e5, 1.9e6]  # sorted by size, not row order
    assert list(lines[1].get_ydata()) == [90.0, 70.0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 8  # every seed of every row
    assert len(plot_scaling(rows).axes) == 1  # no class accuracy in the rows: the paper's panel alone
    acc = [{**r, "class_acc": 0.5 + i / 10, "class_acc_seeds": [0.4 + i / 10, 0.6 + i / 10]}
           for i, r in enumerate(rows)]
    fig = plot_scaling(acc, title="toy")
    right = fig.axes[1]
    assert len(fig.axes) == 2 and "class accuracy" in right.get_ylabel() and fig._suptitle.get_text() == "toy"
    assert [list(line.get_ydata()) for line in right.get_lines()] == [[0.6, 0.5], [0.8, 0.7]]  # by size, per tokenizer
    assert sum(len(c.get_offsets()) for c in right.collections) == 8
    for axis in fig.axes:  # the sizes name the x ticks, at the parameters of the first tokenizer's DiTs
        assert list(axis.get_xticks()) == [1.8e5, 1.9e6] and axis.get_xscale() == "log"
        assert [t.get_text() for t in axis.get_xticklabels()] == ["toy-XS/1\n0.18M", "toy-M/1\n1.90M"]
    with pytest.raises(DataError, match="params"):
        plot_scaling([{"tokenizer": "x", "size": "toy-S", "gfid": 1.0}])
    with pytest.raises(DataError):
        plot_scaling([])


def test_the_gap_shrinks_only_if_it_shrinks_at_every_size_step():
    def rows(gaps_per_size):
        out = []
        for size, gaps in gaps_per_size.items():
            out += [{"name": "d4", "tokenizer": "low", "size": size, "gfid_seeds": [10.0, 10.0]},
                    {"name": "d32", "tokenizer": "high", "size": size, "gfid_seeds": [10.0 + g for g in gaps]}]
        return out

    # the review's case: +41 / +51 / +26, shrinking between the end points but growing at the first step
    bumpy = T.scaling_gaps(rows({"toy-XS/1": [41.0, 41.0], "toy-S/1": [51.0, 51.0], "toy-M/1": [26.0, 27.0]}),
                           "d4", "d32")
    assert bumpy["claim"]["verdict"].startswith("not shown as a trend: toy-XS/1 -> toy-S/1 (runs 0, 1)")
    steady = T.scaling_gaps(rows({"toy-XS/1": [41.0, 41.0], "toy-S/1": [31.0, 32.0], "toy-M/1": [21.0, 20.0]}),
                            "d4", "d32")
    assert steady["claim"]["verdict"] == "shown" and "acc_claim" not in steady  # no class accuracy in the rows


def test_the_class_accuracy_gap_is_judged_by_the_same_rule_and_said_beside_the_fid_gap():
    def rows(per_size):  # size: (gFID gap per run, class accuracy d32 loses per run)
        out = []
        for size, (gaps, lost) in per_size.items():
            out += [{"name": "d4", "tokenizer": "low", "size": size, "gfid_seeds": [2.0, 2.0],
                     "class_acc_seeds": [0.7, 0.7]},
                    {"name": "d32", "tokenizer": "high", "size": size, "gfid_seeds": [2.0 + g for g in gaps],
                     "class_acc_seeds": [0.7 - a for a in lost]}]
        return out

    # FID's gap shrinks at every step while the high-d DiTs lose more and more of the classes
    split = T.scaling_gaps(rows({"toy-XS/1": ([1.0, 1.1], [0.01, 0.02]), "toy-S/1": ([0.6, 0.5], [0.05, 0.06]),
                                 "toy-M/1": ([0.2, 0.1], [0.10, 0.12])}), "d4", "d32")
    assert split["claim"]["verdict"] == "shown"
    assert [round(g["acc_gap"], 3) for g in split["gaps"]] == [0.015, 0.055, 0.11]
    assert split["acc_claim"]["verdict"] == "reversed" and "class accuracy high loses" in split["acc_claim"]["claim"]
    assert split["claim"]["readings"] == "class-acc. gap DISAGREES with gFID (+0.015 -> +0.110)"
    both = T.scaling_gaps(rows({"toy-XS/1": ([1.0, 1.1], [0.10, 0.12]), "toy-M/1": ([0.2, 0.1], [0.01, 0.02])}),
                          "d4", "d32")
    assert both["acc_claim"]["verdict"] == "shown" and both["claim"]["readings"].startswith("class-acc. gap agrees")


def test_the_f8_curves_are_one_per_tokenizer_x_dit_seed_run_each_held_to_its_own_tokenizer(monkeypatch):
    """On a ladder that retrains the tokenizer per seed, Fig. 4a/b has a curve per seed run ("t1d0"), each with
    its own tokenizer's rFID, and the speed-up verdicts name the run."""
    study = Study("lab", progress=False)
    calls = []

    def fake_curve(name, *extra, n=None):
        calls.append((name, extra))
        base = 10.0 if name == "d16" else 8.0
        return [{"step": s, "fid": base * 6000 / s, "class_acc": 0.5} for s in study.curve_steps]

    monkeypatch.setattr(study, "convergence", fake_curve)
    monkeypatch.setattr(study, "recon", lambda name, *extra: {"rfid": 2.0 if extra else 1.0, "recon_class_acc": 0.9})
    rows, speed = T.convergence(study)
    assert [r["seed"] for r in rows[:4]] == ["t0d0", "t0d1", "t1d0", "t1d1"]
    assert [r["rfid"] for r in rows[:4]] == [1.0, 1.0, 2.0, 2.0]
    assert {e for _, e in calls} == set(map(tuple, study.seed_runs())) and len(calls) == 12
    assert speed["seeds"] == ["t0d0", "t0d1", "t1d0", "t1d1"] and len(set(speed["speedup_seeds"])) == 1
    assert "run t0d0: 1.00x-2.00x" in speed["verdict"]  # VF crosses between the last two snapshots in every run


def test_the_plan_reads_the_keys_the_study_writes_and_trains_nothing(study, monkeypatch, capsys):
    """`reproduce --plan`: a call whose results the study wrote needs nothing; a new DiT seed on a trained tokenizer
    trains only its DiT; an untrained rung both; a convergence curve of a DiT kept without snapshots trains it again
    up to its last snapshot. Planning trains and samples nothing."""
    import vavae_lab.train.dit as train_module
    from vavae_lab.study.plan import plan

    monkeypatch.setenv("VAVAE_LAB_RETRAIN", "1")  # the pack out of the way: only this cache counts
    study.generation("d4")
    study.recon("d4")
    study.generation("d4", *study.seeded(3))  # a DiT kept without snapshots, as the pack restores one
    keys = study.result_keys("convergence", "d4", *study.seeded(3))
    assert len(keys) == len(study.curve_steps) and keys[-1] == study.result_keys("generation", "d4",
                                                                                   *study.seeded(3))[0]
    monkeypatch.setattr(train_module, "train_dit", _boom)
    monkeypatch.setattr(pipeline, "evaluate_dit", _boom)
    p = plan("smoke", TINY, seeds=(0, 3), tables=["dilemma", "convergence"])
    calls = {c["call"]: c for c in p["calls"]}
    assert calls["generation d4"]["missing"] == 0 and calls["recon d4"]["missing"] == 0
    seeded = calls["generation d4 [dit.seed=3 sample.seed=3]"]
    assert seeded["missing"] == 0
    guided = calls["generation d4 [sample.cfg_scale=3.0 dit.seed=3 sample.seed=3]"]
    assert guided["missing"] == 1 and guided["train"] == []  # another sampler on a trained DiT: sampling only
    tok = study.tokenizer_key(study.config("d4"))
    assert not any(t == f"tokenizer {tok}" for c in p["calls"] for t in c["train"])
    assert [t.split()[0] for t in calls["generation d16"]["train"]] == ["tokenizer", "dit"]
    dit = study.dit_key(study.config("d4", *study.seeded(3)))
    curve = calls["convergence d4 [dit.seed=3 sample.seed=3]"]
    assert curve["missing"] == len(keys) - 1  # every point but the finished DiT's
    assert curve["train"] == [f"dit {dit} again to step {study.curve_steps[-2]} (snapshots)"]
    assert p["missing"] == sum(c["missing"] for c in p["calls"]) and p["minutes"] > 0
    assert main(["reproduce", "--preset", "smoke", *TINY, "--plan", "--tables", "dilemma"]) == 0
    out = capsys.readouterr().out
    assert "generation d16: 1 of 1 to compute; trains tokenizer" in out and "to train, roughly" in out
    assert "generation d4:" not in out  # found: not listed


def test_reproduce_without_out_or_plan_says_which_flag_is_missing(capsys):
    assert main(["reproduce", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out FOLDER" in err and "--plan" in err


def test_lab_scaling_holds_each_seed_run_to_its_own_tokenizers_rfid(monkeypatch):
    """Fig. 4c on the f8 ladder: a run on tokenizer seed 1 is held to that tokenizer's rFID, not seed 0's (a d16
    whose seed-1 DiTs beat seed 0's rFID but not their own must not be flagged "below rFID")."""
    study = Study("lab", progress=False)
    rfids = {(): 3.2, ("seed=1",): 1.0}
    monkeypatch.setattr(study, "generation", lambda name, *extra, n=None: {"fid": 1.5 if "seed=1" in extra else 3.6})
    monkeypatch.setattr(study, "recon", lambda name, *extra: {"psnr": 20.0, "ssim": 0.5, "rfid": rfids[tuple(extra)],
                                                              "recon_class_acc": 1.0})
    monkeypatch.setattr(study, "dit_cost", lambda name, *extra: {"params": 1, "flops_per_step": 1e9})
    rows, _ = T.scaling(study, ["toy-S"])
    assert [r["rfid_runs"] for r in rows] == [[3.2, 3.2, 1.0, 1.0]] * 2
    assert [r["bound"] for r in rows] == ["no", "no"]  # 1.5 is below 3.2 but not below its own tokenizer's 1.0
    from vavae_lab.study.report import show_table
    assert "| 3.20 / 1.00 |" in str(show_table(rows, T.BY_KEY["scaling"].columns).data)  # both bounds shown
    rows, _ = T.scaling(study)  # every size at the preset's one step budget, and the table says how many
    assert {r["steps"] for r in rows} == {study.base.dit.train.steps} and "| 6,000 |" in str(
        show_table(rows, T.BY_KEY["scaling"].columns).data)
