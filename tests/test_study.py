"""The toy study: cache keys per stage, reuse across calls, export/import between machines, the report."""
import json

import pytest
import torch

from vavae_lab.build import sample_scoring
from vavae_lab.errors import ConfigError
from vavae_lab.study import Study, write_report
from vavae_lab.study.report import _describe
from vavae_lab.study import jobs as J
from vavae_lab.study import tables as T
from vavae_lab.study import variants as V
from vavae_lab.study.share import export_study, import_study

TINY = ("data.num_train=128", "data.num_test=64", "tokenizer.train.steps=4", "tokenizer.train.batch_size=8",
        "tokenizer.train.eval_images=32", "tokenizer.train.ckpt_every=4", "dit.train.steps=4",
        "dit.train.batch_size=16", "dit.train.ckpt_every=4", "sample.num_samples=32", "metrics.toy.feature_dim=2", "sample.batch_size=32",
        "sample.steps=2", "metrics.num_images=32", "latents.shard_size=128", "latents.stats_count=128")


def test_stage_keys_change_only_with_their_own_settings():
    s = Study("smoke", progress=False)
    base = s.config("d32_vf")
    other_sampler = s.config("d32_vf", "sample.cfg_scale=3.0")
    other_dit = s.config("d32_vf", "dit.model.mlp=gelu")
    assert s.dit_key(other_sampler) == s.dit_key(base)
    assert s.generation_key(other_sampler, 10) != s.generation_key(base, 10)
    assert s.tokenizer_key(other_dit) == s.tokenizer_key(base) and s.dit_key(other_dit) != s.dit_key(base)
    assert s.tokenizer_key(s.config("d16_vf")) != s.tokenizer_key(base)
    quiet = Study("smoke", progress=True)  # progress bars change no result
    assert quiet.dit_key(quiet.config("d32_vf")) == s.dit_key(base)


def test_lab_keys_the_packed_f8_runs():
    # the pack for notebooks 01 and 02 was trained across sessions (docs/costs.md); a change that moves these keys
    # orphans it, so it must be deliberate
    s = Study("lab", progress=False)
    base = s.config("d16")
    assert (s.tokenizer_key(base), s.dit_key(base)) == ("db0699fe4834", "98da1624e978")
    assert s.tokenizer_key(s.config("d4")) == "a055ecd6027b"
    assert s.ladder.f == 8 and s.label("d16_vf") == "f8d16 + VF"


def test_show_config_names_the_latent_and_the_ladder_by_compression(capsys):
    from vavae_lab.cli import main

    main(["show-config", "--preset", "lab"])
    tail = capsys.readouterr().out.splitlines()[-2:]
    assert tail == ["# latent f8d16 (12x): 16 x 4 x 4 numbers per 3 x 32 x 32 image",
                    "# the d ladder of notebooks 01 and 02: f8d4 48x, f8d8 24x, f8d16 12x"]   # the paper's 48x ... 12x
    main(["show-config", "--preset", "imagenet256_f16d32"])
    assert capsys.readouterr().out.splitlines()[-1] == "# latent f16d32 (24x): 32 x 16 x 16 numbers per 3 x 256 x 256 image"


def test_run_seeds_names_the_tokenizer_and_dit_seed_of_each_seed_run():
    pairs = Study("lab", ["tokenizer.model.ch_mult=[1,1,2,2]"], progress=False)  # the f8 ladder: tokenizer x DiT seeds
    assert [pairs.run_seeds(r) for r in pairs.seed_runs()] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    dits = Study("smoke", progress=False)
    assert [dits.run_seeds(r) for r in dits.seed_runs()] == [(0, 0), (0, 1)]


def test_lab_classic_keys_the_first_packed_study():
    # the preset that keeps the first toy study (f4, classic shapes) by name when `lab` moves to the f8 regime: the
    # same configs, so the same keys as the packed lab runs (data/pack)
    s = Study("lab_classic", progress=False)
    base = s.config("d32")
    assert (s.tokenizer_key(base), s.dit_key(base)) == ("329f084ed537", "db5ff11f0187")
    assert s.ladder.f == 4 and s.label("d32_vf") == "f4d32 + VF"
    from vavae_lab.presets import classic

    assert classic("lab") == "lab_classic" and classic("smoke") == "smoke"  # notebooks 03-05 read lab_classic


def test_dit_seed_repeats_a_dit_on_the_same_tokenizer_and_latents():
    s = Study("lab_classic", progress=False)
    base, again = s.config("d32"), s.config("d32", "dit.seed=1")
    assert s.tokenizer_key(again) == s.tokenizer_key(base) and s.latents_key(again) == s.latents_key(base)
    assert s.dit_key(again) != s.dit_key(base)
    # unset, it is keyed as before the field existed: the packed lab keys (data/pack) stay valid
    assert (s.tokenizer_key(base), s.dit_key(base)) == ("329f084ed537", "db5ff11f0187")
    with pytest.raises(ConfigError, match="dit.seed"):
        s.config("d32", "dit.seed=-1")


def test_unknown_variant_names_the_choices():
    with pytest.raises(ConfigError, match="d32_vf"):
        Study("smoke").config("d64")


def test_every_ablation_sits_on_the_ladders_top_rung():
    """Tables 5, 4, 6, the dose-response, Fig. 4 and the DiT of notebooks 04-05 name the ladder's top VF rung: f4d32
    on lab_classic (the names its pack keys), f8d16 on lab; the dose runs VF at 0, 0.05, 0.1 and 0.5."""
    classic, f8 = V.LADDERS[4], V.LADDERS[8]
    assert classic.table5 == ("d32", "d32_vf", "d32_vf_no_mcos", "d32_vf_no_mdms", "d32_vf_margins")
    assert classic.table4 == ("d32", "d32_vf", "d32_vf_masked", "d32_vf_random") and classic.dit_tokenizer == "d32_vf"
    assert classic.convergence == classic.latent_views == ("d4", "d32", "d32_vf") and classic.scaling == ("d4", "d32")
    assert f8.top == "d16" and f8.scaling == ("d4", "d16") and f8.speedup == ("d16", "d16_vf")
    lab = Study("lab")
    for ladder in (classic, f8):
        names = (*ladder.table5, *ladder.table4, *ladder.vf_dose, *ladder.convergence)
        assert all(V.TOKENIZERS[n].d == V.TOKENIZERS[ladder.top].d for n in names if n != ladder.rungs[0])
    vf = [lab.config(n).tokenizer.vf for n in f8.vf_dose]
    assert [c.weight if c.enabled else 0.0 for c in vf] == [0.0, 0.05, 0.1, 0.5]
    # a d16 ablation differs from its d32 namesake in the latent size only
    a, b = lab.config("d16_vf_no_mcos"), lab.config("d32_vf_no_mcos")
    assert not a.tokenizer.vf.use_mcos and not b.tokenizer.vf.use_mcos and a.tokenizer.model.embed_dim == 16


def test_table1_rows_are_cumulative_and_end_at_the_presets_dit():
    assert V.table1_overrides(0, "toy-S") == tuple(e.replace("{family}", "toy-S") for e in V.TABLE1[0][1])
    for preset in ("lab", "lab_long", "smoke"):
        study = Study(preset)
        assert "dit.model.size=" + study.dit_family + "/2" in study.table1(0)
        last = study.config(study.ladder.dit_tokenizer, *study.table1(len(V.TABLE1) - 1))
        assert study.dit_key(last) == study.dit_key(study.config(study.ladder.dit_tokenizer))


@pytest.mark.slow
def test_generation_is_cached_and_survives_export_import(tmp_path, monkeypatch):
    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "a"))
    s = Study("smoke", TINY, progress=False)
    first = s.generation("d4")
    assert set(first) >= {"fid", "is", "precision", "recall", "n", "dit_loss", "class_acc"} and first["n"] == 32
    assert 0.0 <= first["class_acc"] <= 1.0
    run = s._dirs(s.config("d4"))["dit"] / "dit.pt"
    stamp = run.stat().st_mtime_ns
    assert s.generation("d4", "sample.steps=3")["fid"] != first["fid"]  # new sampler settings, same DiT
    assert run.stat().st_mtime_ns == stamp
    archives = export_study(tmp_path / "out" / "study", max_bytes=2**20)
    assert archives and all(a.stat().st_size <= 2**20 + 2**19 for a in archives)

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path / "b"))
    assert import_study(*archives) > 0
    again = Study("smoke", TINY, progress=False)
    assert again.generation("d4") == first  # read from the imported cache, nothing retrained
    assert not (again._dirs(again.config("d4"))["latents"]).joinpath("meta.json").exists()
    images, labels = again.samples("d4", n=4)  # the slimmed DiT still samples
    assert images.shape[0] == 4 and images.dtype.is_floating_point is False


@pytest.mark.slow
def test_real_floor_is_real_images_scored_like_samples_and_cached(tmp_path, monkeypatch):
    from vavae_lab.metrics import evaluate_samples

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path))
    s = Study("smoke", TINY, progress=False)
    floor = s.floor()
    assert floor["n"] == 32 and (tmp_path / "cache" / "study" / "floors").is_dir()
    noise = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert evaluate_samples(noise, **sample_scoring(s.base), kid=False)["fid"] > 2 * floor["fid"]
    assert s.floor() == floor  # read back from the cache


def test_import_rejects_a_foreign_archive(tmp_path, monkeypatch):
    import tarfile

    monkeypatch.setenv("VAVAE_LAB_DATA", str(tmp_path))
    bad = tmp_path / "bad.tar"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(bad, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="../escape.txt")
    from vavae_lab.errors import DataError
    with pytest.raises(DataError, match="not a study archive"):
        import_study(bad)
    (tmp_path / "junk.tar").write_text("not a tar")
    with pytest.raises(DataError, match="not a readable study archive"):
        import_study(tmp_path / "junk.tar")


def test_report_writes_markdown_json_and_figure(tmp_path):
    tok = {"tokenizer": "f4d16", "psnr": 25.0, "ssim": 0.8, "rfid": 30.0, "gfid": 100.0, "gfid_seeds": [90.0, 110.0],
           "gfid_spread": 20.0, "gfid_cfg": 60.0}
    rows2 = [{**tok, "name": "d16", "d": 16, "vf": False}, {**tok, "name": "d16_vf", "d": 16, "vf": True, "gfid": 60.0}]
    results = {"preset": "smoke", "seeds": [0, 1], "floor": {"fid": 0.25, "n": 32}, "dilemma": [{**rows2[0], "name": "d4", "d": 4}], "table2": rows2,
               "table5": rows2, "table4": rows2,
               "claims": [T.claim("x", {"gfid_seeds": [1.0, 2.0], "gfid_spread": 1.0},
                                  {"gfid_seeds": [5.0, 4.0], "gfid_spread": 1.0})],
               "table6": [{"tokenizer": "f4d16", "density": 0.2, "density_std": 0.01, "gini": 0.1, "gini_std": 0.0,
                           "entropy": 0.99, "entropy_std": 0.0, "gfid": 100.0}],
               "proxies": [{"tokenizer": "f4d16", "gfid": 100.0, "probe_gfid": 200.0, "probe_density": 0.2,
                            "probe_gini": 0.1, "probe_entropy": 0.99}],
               "spearman": {"n": 1, "probe_gfid": 1.0},
               "table1": [{"change": "x", "gfid": 10.0, "dit_loss": 0.5, "paper_fid": 19.5}],
               "sampling": {"cfg": [{"setting": "CFG 1.0", "gfid": 1.0}]},
               "table1_verdicts": [T.single_seed_claim("step 1: x", 20.0, 10.0, {"gfid": 10.0, "gfid_spread": 1.0})],
               "convergence": [{"name": n, "tokenizer": n, "seed": 0, "steps": [75, 600], "gfid_steps": [g, g / 2],
                                "class_acc_steps": [0.5, 0.6]} for n, g in (("d32", 100.0), ("d32_vf", 60.0))],
               "speedup": T.seeded_speedup([{"name": n, "seed": 0, "steps": [75, 600], "gfid_steps": [g, g / 2]}
                                            for n, g in (("d32", 100.0), ("d32_vf", 60.0))], "d32", "d32_vf"),
               "scaling": [{"tokenizer": "f4d4", "size": "toy-XS/1", "params": 183496, "gflops_step": 2.92,
                            "steps": 6000, "gfid": 50.0, "gfid_seeds": [49.0, 51.0], "gfid_spread": 2.0}],
               "vf_dose": [{"tokenizer": "f4d32 + VF (weight 0.5)", "vf_weight": 0.5, "rfid": 2.0, "gfid": 3.0,
                            "vf_term_weight_seeds": [0.25, None]}],
               "scaling_gap": {"low": "d4", "high": "d32",
                               "gaps": [{"size": "toy-XS/1", "gap": 10.0, "gap_seeds": [9.0, 11.0]}],
                               "claim": {"claim": "the gap shrinks", "verdict": "shown"}},
               "repa": [{"tokenizer": "f4d32 + REPA", "rfid": 3.0, "gfid": 9.0, "gfid_seeds": [8.0, 10.0],
                         "gfid_spread": 2.0}],
               "repa_verdicts": [T.claim("REPA helps", {"gfid_seeds": [1.0, 2.0], "gfid_spread": 1.0},
                                         {"gfid_seeds": [5.0, 4.0], "gfid_spread": 1.0})],
               "repa_curves": [{"tokenizer": "f4d32 + REPA", "seed": "t0d0", "steps": [75, 600],
                                "gfid_steps": [20.0, 9.0]}],
               "repa_depth": [{"tokenizer": "f4d32", "block": 1, "gfid": 9.0}],
               "repa_probe": [{"tokenizer": "f4d32", "dit": "plain", "cos": 0.9, "cos_seeds": [0.9, 0.91],
                               "cos_train": 0.9, "position_mean": 0.5}],
               "timing": {"jobs": [{"job": _describe(((), [("generation", "d32_vf", ())])), "seconds": 75.0}],
                          "jobs_total_seconds": 75.0, "wall_seconds": 80.0, "jobs_in_parallel": 1}}
    path = write_report(results, tmp_path, minutes=1.5)
    text = path.read_text()
    assert "| generation d32_vf | 75.0 |" in text and "1 jobs, 1.2 min of job time" in text
    assert "| 100.00 | 90.00 / 110.00 | 20.00 |" in text  # mean, each DiT seed, spread
    assert "the mean over DiT seeds [0, 1] (same tokenizer), with each run" in text
    crossed = write_report({**results, "tokenizer_seeds": True}, tmp_path / "crossed", minutes=1.5).read_text()
    assert "the mean over tokenizer seeds [0, 1] x DiT seeds [0, 1] (each seed run trains its own" in crossed
    assert "32 held-out real images scored like the samples give FID 0.25" in text
    assert "| f4d16 | 25.00 |" in text and "Spearman with the full gFID over 1 tokenizers: probe_gfid +1.00" in text
    assert all(f"## {t.title}" in text for t in T.TABLES)  # report.md iterates the declared tables
    assert "| f4d32 + VF (weight 0.5) | 0.5 |" in text and "| 0.25 / - |" in text
    assert json.loads((tmp_path / "report.json").read_text())["preset"] == "smoke"
    assert (tmp_path / "frontier.png").stat().st_size > 1000
    assert "| f4d4 | toy-XS/1 | 183,496 | 2.92 | 6,000 | 50.00 |" in text and "d32_vf | 0 | 75 / 600 | 60.0 / 30.0 |" in text
    assert "after 150 steps: 4.00x" in text and (tmp_path / "convergence.png").stat().st_size > 1000
    assert "![scaling](scaling.png)" in text and (tmp_path / "scaling.png").stat().st_size > 1000
    assert "### Verdicts" in text and "| step 1: x | 20.00 | 10.00 | -50% | - | 10% | lower gFID |" in text
    assert "| REPA helps | +4.00 / +2.00 | 1.00 | shown |" in text  # the 2 x 2's verdicts in the claims' columns
    assert (tmp_path / "repa_curves.png").stat().st_size > 1000


def test_a_claim_needs_its_sign_in_every_seed_and_more_than_the_spread():
    row = lambda *v: {"gfid_seeds": list(v), "gfid_spread": max(v) - min(v)}
    assert T.claim("c", row(10.0, 12.0), row(20.0, 19.0))["verdict"] == "shown"  # +10, +7 > spread 2
    assert T.claim("c", row(10.0, 12.0), row(13.0, 19.0))["verdict"].startswith("not shown: same sign")  # +3, +7 < 6
    assert T.claim("c", row(10.0, 12.0), row(13.0, 11.0))["verdict"].startswith("not shown")
    assert T.claim("c", row(20.0, 19.0), row(10.0, 12.0))["verdict"] == "reversed"
    # lower in every seed but within the spread: said as such, not as a sign change
    other_way = T.claim("c", row(13.0, 19.0), row(10.0, 12.0))["verdict"]  # -3, -7 against spread 6
    assert other_way == "not shown: the other way in every run, beyond the seed spread in 1 of 2 runs"
    assert T.claim("c", row(11.0, 13.0), row(10.0, 12.0))["verdict"] == ("not shown: the other way in every run, "
                                                                         "within the seed spread")  # -1, -1 against 2
    same_sign = T.claim("c", row(10.0, 12.0), row(13.0, 19.0))["verdict"]  # +3, +7 against 6
    assert same_sign == "not shown: same sign in every run, beyond the seed spread in 1 of 2 runs"
    rfid = lambda *v: {"rfid_seeds": list(v), "rfid_spread": max(v) - min(v)}
    rows = [{"name": n, **rfid(*r), **row(*g)} for n, r, g in
            (("d4", (40.0, 42.0), (10.0, 11.0)), ("d16", (20.0, 21.0), (20.0, 22.0)), ("d32", (21.0, 20.5), (30.0, 31.0)))]
    verdicts = [c["verdict"] for c in T.dilemma_claims(rows)]
    # rFID d4 -> d32 is shown between the end points, but d16 -> d32 flips in seed 0: no trend
    assert verdicts[0] == "not shown as a trend: d16 -> d32 (run 0) has the wrong sign (the end points alone: shown)"
    assert verdicts[1:3] == ["shown", "not shown: the sign changes between runs"]
    assert verdicts[3:] == ["shown"] * 3


def test_a_reconstruction_claims_readings_are_read_against_rfid():
    row = lambda r, acc: {"rfid_seeds": [r, r + 0.1], "rfid_spread": 0.1, "recon_class_acc": acc,
                          "recon_class_acc_n": 4000}
    said = T.claim("rFID worsens", row(1.0, 0.99), row(2.0, 0.90), "rfid")["readings"]
    assert said == "class acc. agrees with rFID (0.99 -> 0.9)"  # rFID and class accuracy both call the second worse


def test_vf_claims_read_the_top_rung_first_and_ask_whether_the_gain_grows_with_d():
    row = lambda n, t, *v: {"name": n, "tokenizer": t, "gfid_seeds": list(v), "gfid_spread": max(v) - min(v),
                            "class_acc": 0.5 + 0.1 * ("VF" in t), "class_acc_n": 4000}
    rows = [row("d8", "f8d8", 30.0, 31.0, 30.5, 31.5), row("d8_vf", "f8d8 + VF", 29.0, 30.0, 29.5, 30.0),
            row("d16", "f8d16", 50.0, 52.0, 51.0, 50.0), row("d16_vf", "f8d16 + VF", 40.0, 41.0, 40.5, 41.0)]
    out = T.vf_claims(rows)
    # each claim names its rows in the direction of the change (without -> with VF); positive agrees with it
    assert [c["claim"] for c in out] == ["(c) VF improves f8d16's gFID: f8d16 -> f8d16 + VF",
                                        "    VF at f8d8: f8d8 -> f8d8 + VF", "    the gain grows with d: f8d8 -> f8d16"]
    assert out[0]["readings"] == "class acc. agrees with gFID (0.5 -> 0.6)"  # read in the claim's order too
    assert out[0]["verdict"] == "shown" and out[0]["diff_seeds"] == [10.0, 11.0, 10.5, 9.0]
    assert out[1]["verdict"].startswith("not shown: same sign")  # +1.0 / +1.0 / +1.0 / +1.5 within the spread 1.0
    assert out[2]["verdict"] == "shown" and out[2]["diff_seeds"] == [9.0, 10.0, 9.5, 7.5]  # gain 10 vs 1


def test_an_ablation_row_is_judged_against_the_full_loss_and_against_no_vf():
    row = lambda n, *v: {"name": n, "gfid_seeds": list(v), "gfid_spread": max(v) - min(v)}
    rows = [row("d32", 90.0, 88.0), row("d32_vf", 60.0, 62.0), row("a", 80.0, 75.0), row("b", 95.0, 70.0)]
    out = T.ablation_claims(rows)
    assert [c["claim"].split(":")[0] for c in out[::2]] == ["a", "b"]  # one pair per ablation row, full and base skipped
    assert [c["verdict"] for c in out[:2]] == ["shown", "shown"]  # a: +20 / +13 > 5 worse than full, +10 / +13 better than none
    assert out[2]["verdict"].startswith("not shown: same sign")  # b: +35 / +8 worse than full, but its own spread is 25
    assert out[3]["verdict"].startswith("not shown")  # and better than none in one seed only


def test_the_dose_response_is_a_trend_only_if_every_weight_step_agrees():
    def row(w, gfids, rfids):
        return {"name": f"w{w}", "tokenizer": f"w{w}", "vf_weight": w, "gfid_seeds": gfids,
                "gfid_spread": max(gfids) - min(gfids), "rfid_seeds": rfids, "rfid_spread": max(rfids) - min(rfids)}

    steady = [row(0.0, [9.0, 9.2], [1.0, 1.1]), row(0.05, [7.0, 7.1], [1.5, 1.6]), row(0.1, [5.0, 5.2], [2.0, 2.1]),
              row(0.5, [3.0, 3.1], [2.5, 2.6])]
    gen, rec = T.dose_claims(steady)
    assert gen["verdict"] == "shown" and rec["verdict"] == "shown" and "w0.0 -> w0.5" in gen["claim"]
    bumpy = [*steady[:2], row(0.1, [7.5, 7.6], [1.2, 1.3]), steady[3]]  # 0.05 -> 0.1 goes the wrong way
    gen, rec = T.dose_claims(bumpy)
    assert gen["verdict"].startswith("not shown as a trend: weight 0.05 -> 0.1 (runs 0, 1)")
    assert rec["verdict"].startswith("not shown as a trend: weight 0.05 -> 0.1")


def test_late_mean_reads_the_second_half_of_a_logged_reading():
    from vavae_lab.study.dose import late_mean

    history = {"train": [{"step": s, "vf_weight": float(s)} for s in (10, 20, 30, 40)] + [{"step": 50}]}
    assert late_mean(history, "vf_weight") == 30.0 and late_mean(history, "missing") is None


def test_a_single_seed_change_counts_only_beyond_the_relative_seed_spread():
    yardstick = {"gfid": 100.0, "gfid_seeds": [95.0, 105.0], "gfid_spread": 10.0}  # 10 % of the mean
    assert T.single_seed_claim("c", 300.0, 250.0, yardstick)["verdict"] == "lower gFID"  # -17 %
    assert T.single_seed_claim("c", 300.0, 340.0, yardstick)["verdict"] == "higher gFID"  # +13 %
    row = T.single_seed_claim("c", 300.0, 280.0, yardstick)  # -7 %: an absolute 20 > 10, but not relative
    assert row["verdict"].startswith("unresolved") and row["change"] == pytest.approx(-1 / 15)
    assert row["rel_spread"] == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        T.single_seed_claim("c", 0.0, 1.0, yardstick)


def test_table1_and_sampling_verdicts_are_declared_once_and_judge_each_change_against_the_yardstick():
    yard = {"gfid": 100.0, "gfid_seeds": [95.0, 105.0], "gfid_spread": 10.0}
    t1 = [{"change": c, "gfid": g} for c, g in (("DDPM", 900.0), ("rf", 300.0), ("a", 250.0), ("b", 240.0),
                                                ("patch 1", 60.0))]
    out = T.table1_claims(t1, yard)
    assert [c["claim"] for c in out] == ["step 1: rf", "step 2: a", "step 3: b", "step 4: patch 1",
                                        "rows 1 → 3: the recipe at a fixed token count"]
    assert [c["verdict"] for c in out] == ["lower gFID", "lower gFID", "unresolved (within the seed spread)",
                                           "lower gFID", "lower gFID"]  # 300 -> 240: -20 % beyond 10 %
    row = lambda method, steps, g: {"method": method, "steps": steps, "nfe": steps * (2 if method == "heun" else 1),
                                    "gfid": g}
    sweeps = {"sampler": [row("euler", 10, 60.0), row("euler", 20, 58.0), row("heun", 5, 50.0), row("heun", 10, 57.0),
                          {"method": "dopri5", "steps": None, "nfe": None, "gfid": 55.0}],
              "cfg": [{"cfg": 1.0, "gfid": 60.0}, {"cfg": 3.0, "gfid": 40.0}],
              "interval": [{"start": 0.0, "gfid": 40.0}, {"start": 0.11, "gfid": 39.0}],
              "shift": [{"shift": 1.0, "gfid": 60.0}, {"shift": 0.3, "gfid": 70.0}]}
    out = T.sampling_claims(sweeps, yard)
    assert [c["claim"] for c in out] == [
        "Euler 10 steps -> Heun 5 steps (10 NFE each)", "Euler 20 steps -> Heun 10 steps (20 NFE each)",
        "no guidance -> CFG 3", "CFG 3 everywhere -> only while t >= 0.11 (the paper samples with it)",
        "no shift -> shift 0.3 (the paper samples with it)"]
    assert [c["verdict"].split(" (")[0] for c in out] == ["lower gFID", "unresolved", "lower gFID", "unresolved",
                                                          "higher gFID"]
    # a weaker plain scale is the sweep's best, and with class accuracies the interval meets the plain scale
    # that guides as much (nearest class accuracy; the weaker on a tie), since an interval is also less guidance
    for r, acc in zip(sweeps["cfg"], (0.60, 0.90)):
        r["class_acc"] = acc
    sweeps["cfg"].insert(1, {"cfg": 2.0, "gfid": 38.0, "class_acc": 0.80})
    sweeps["interval"][1]["class_acc"] = 0.85
    claims = [c["claim"] for c in T.sampling_claims(sweeps, yard)]
    assert claims[2:6] == ["no guidance -> CFG 3", "no guidance -> CFG 2 (the sweep's best)",
                           "CFG 3 everywhere -> only while t >= 0.11 (the paper samples with it)",
                           "CFG 2 everywhere -> CFG 3 only while t >= 0.11 (the other plain scale nearest in class "
                           "acc.: 0.80 vs 0.85)"]
    assert T.BY_KEY["table1"].verdicts is T.table1_verdicts and T.BY_KEY["sampling"].verdicts is T.sampling_verdicts
    # the sweep rows name their solver and cost, so nothing parses a label; the overrides keep their keys
    assert V.SAMPLER_SWEEP[0] == ("euler 5 steps", ("sample.sampler=euler", "sample.steps=5"))
    assert V.SAMPLER_SWEEP[-1] == ("dopri5 adaptive", ("sample.sampler=dopri5",))


def test_jobs_for_table1_or_sampling_include_their_yardstick_runs():
    calls = [(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["sampling"]) for m, n, e in job]
    name = V.LADDERS[4].dit_tokenizer
    assert (name, ()) in calls and (name, V.seed_overrides(1)) in calls


def test_jobs_cover_every_table_entry():
    calls = [(m, n, e) for _, job in J.jobs() for m, n, e in job]
    assert {n for m, n, _ in calls if m == "probe"} == set(V.study_tokenizers(V.LADDERS[4]))
    classic = V.LADDERS[4]
    assert {n for m, n, _ in calls if m == "uniformity"} == set(classic.uniformity)
    assert sum(1 for m, n, e in calls if m == "generation" and n == classic.dit_tokenizer
               and "dit.model.size" in " ".join(e)) >= len(V.TABLE1) - 1
    assert len(calls) == len(set(calls))  # nothing trained or scored twice


def test_jobs_repeat_every_tokenizer_table_gfid_per_dit_seed_with_cfg_only_where_shown():
    calls = [(m, n, e) for _, job in J.jobs(seeds=(0, 1)) for m, n, e in job if m == "generation"]
    seed1 = V.seed_overrides(1)
    assert seed1 == ("dit.seed=1", "sample.seed=1") and V.seed_overrides(0) == ()
    repeated = {n for _, n, e in calls if e[-2:] == seed1}
    classic = V.LADDERS[4]
    assert repeated == {*classic.rungs, *classic.table2, *classic.table5, *classic.table4, *classic.uniformity,
                        *classic.vf_dose}
    assert {n for _, n, e in calls if T.CFG in e} == {*classic.rungs, *classic.table2}
    assert all(("generation", n, (T.CFG, *seed1)) in calls for n in classic.rungs)


def test_the_f8_ladder_measures_every_gfid_over_tokenizer_x_dit_seed_pairs():
    ladder = V.LADDERS[8]
    assert ladder.rungs == ("d4", "d8", "d16") and ladder.table2 == ("d8", "d8_vf", "d16", "d16_vf")
    pairs = V.seed_runs((0, 1), 0, tokenizer_seeds=True)
    assert pairs == [(), ("dit.seed=1", "sample.seed=1"), ("seed=1", "dit.seed=0", "sample.seed=0"), ("seed=1",)]
    calls = [(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["dilemma", "table2"], ladder=ladder)
             for m, n, e in job if m == "generation"]
    for name in (*ladder.rungs, *ladder.table2):
        assert [e for n, e in calls if n == name and T.CFG not in e] == pairs
        assert [e for n, e in calls if n == name and T.CFG in e] == [(T.CFG, *p) for p in pairs]
    sized = [(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["scaling"], ladder=ladder) for m, n, e in job
             if m == "generation" and e and e[0].startswith("dit.model.size")]  # Fig. 4c's other DiT sizes
    assert sized == [(n, (f"dit.model.size={f}/1", *p)) for n in ladder.scaling for f in V.SCALING_SIZES[1:]
                     for p in pairs]
    # four different DiTs on two different tokenizers (the keys say so)
    study = Study("smoke")
    configs = [study.config("d8", *p) for p in pairs]
    assert len({study.dit_key(c) for c in configs}) == 4 and len({study.tokenizer_key(c) for c in configs}) == 2
    assert V.LADDERS[4].paper["d32"] == "f16d32" and ladder.paper["d16"] == "f16d64"  # beside the same compression
    assert V.TOKENIZERS["d8_vf"].label(8) == "f8d8 + VF" and V.TOKENIZERS["d32"].label(4) == "f4d32"


def test_jobs_for_chosen_tables_keep_their_order_and_reject_a_typo():
    jobs = J.jobs(tables=["table2", "dilemma"])
    classic = V.LADDERS[4]
    assert [job[0][1] for _, job in jobs] == list(dict.fromkeys([*classic.table2, *classic.rungs]))
    assert not any(m in ("probe", "uniformity") for _, job in jobs for m, _, _ in job)
    with pytest.raises(ConfigError, match="--tables tabel2: no such table"):
        J.jobs(tables=["tabel2"])
    with pytest.raises(ConfigError, match="look like config overrides, which --tables swallowed; put them before"):
        J.jobs(tables=["dilemma", "dit.train.steps=100"])


def test_the_cli_defaults_to_the_study_folders(capsys):
    """Without folder arguments the CLI stages use the study's cache folders, keyed by keys.stage_key."""
    from vavae_lab import cli
    from vavae_lab.cli.common import _config, _default_folders
    from vavae_lab.keys import stage_key

    args = cli.build_parser().parse_args(["extract-latents", "--preset", "lab_classic",
                                          *V.TOKENIZERS["d32"].overrides])
    config = _config(args)
    _default_folders(args, config, tokenizer="tokenizer", out="latents")
    s = Study("lab_classic", progress=False)
    dirs = s._dirs(s.config("d32"))
    assert (args.tokenizer, args.out) == (str(dirs["tokenizer"]), str(dirs["latents"]))
    assert args.tokenizer.endswith("329f084ed537") and stage_key(config, "dit") == "db5ff11f0187"
    with pytest.raises(ValueError, match="sample count"):
        stage_key(config, "generation")


def test_the_proxies_cover_the_tokenizers_the_studys_tables_name_and_no_others():
    classic = V.study_tokenizers(V.LADDERS[4])  # the ten tokenizers packed with probes for the first toy study
    assert classic == ("d4", "d16", "d32", "d16_vf", "d32_vf", "d32_vf_no_mcos", "d32_vf_no_mdms", "d32_vf_margins",
                       "d32_vf_masked", "d32_vf_random")
    probed = {n for _, job in J.jobs(tables=["proxies"]) for m, n, _ in job if m == "probe"}
    assert probed == set(classic) and "d8" not in probed
    assert T.BY_KEY["proxies"].names is V.study_tokenizers
    assert V.study_tokenizers(V.LADDERS[8])[:5] == ("d4", "d8", "d16", "d8_vf", "d16_vf")


def test_notebook_01s_verdicts_name_the_seed_runs_of_the_ladder():
    row = lambda n, *g: {"name": n, "tokenizer": n, "rfid_seeds": [1.0, 1.0], "rfid_spread": 0.0,
                         "gfid_seeds": list(g), "gfid_spread": max(g) - min(g)}
    rows = [row("d4", 1.0, 1.0, 1.0, 1.0), row("d8", 2.0, 2.0, 2.0, 2.0), row("d16", 3.0, 3.0, 3.0, 3.0)]
    pairs = T.dilemma_verdicts(Study("lab", ["tokenizer.model.ch_mult=[1,1,2,2]"], progress=False), rows)
    assert pairs[3]["claim"].endswith("(tokenizer x DiT seeds)") and pairs[3]["verdict"] == "shown"
    assert T.dilemma_verdicts(Study("smoke", progress=False), rows)[3]["claim"].endswith("(DiT seeds)")


def test_each_seed_run_is_held_to_its_own_tokenizers_rfid():
    row = {"rfid": 3.2, "gfid_seeds": [3.6, 3.5, 1.5, 1.4], "gfid_spread": 2.2}
    assert T.below_bound(row) == "below rFID in seeds 2, 3"  # against tokenizer seed 0's rFID alone
    row["rfid_runs"] = [3.2, 3.2, 1.0, 1.0]  # runs 2 and 3 are on tokenizer seed 1, rFID 1.0
    assert T.below_bound(row) == "no"
    assert T.above_bound(row) == pytest.approx([0.4, 0.3, 0.5, 0.4])  # and how far above it each run sits
    row["rfid_runs"] = [3.2, 3.2, 1.6, 1.0]
    assert T.below_bound(row) == "below rFID in seed 2" and T.above_bound(row)[2] < 0
    assert T.above_bound({"rfid": 3.2, "gfid_seeds": [3.6, 3.0]}) == pytest.approx([0.4, -0.2])  # one tokenizer


def test_on_a_tokenizer_seed_ladder_every_seeded_tokenizer_is_scored_in_each_tokenizer_seed():
    ladder = V.LADDERS[8]  # Table 2's runs on tokenizer seed 1 are held to that tokenizer's rFID, so it is measured
    recons = {(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["table2"], ladder=ladder) for m, n, e in job
              if m == "recon"}
    assert {(n, ("seed=1",)) for n in ladder.table2} <= recons
    classic = {(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["table2"]) for m, n, e in job if m == "recon"}
    assert all(e == () for _, e in classic)  # one tokenizer per d there: its rFID is every run's bound


def test_recon_by_seed_reads_each_tokenizer_in_each_of_its_seeds():
    from types import SimpleNamespace
    from vavae_lab.study.rows import recon_by_seed

    fake = SimpleNamespace(seeds=(0, 1), label=str.upper, tokenizer_seeded=lambda s: (f"seed={s}",) if s else (),
                           recon=lambda n, *extra: {"rfid": len(n) + len(extra), "extra": extra})
    rows = recon_by_seed(fake, ["d8", "d16"])
    assert [(r["tokenizer"], r["tokenizer_seed"], r["extra"]) for r in rows] == [
        ("D8", 0, ()), ("D8", 1, ("seed=1",)), ("D16", 0, ()), ("D16", 1, ("seed=1",))]


def test_table6_on_the_f8_ladder_is_judged_over_tokenizer_seeds():
    """Lab's Table 6 measures each tokenizer seed's latents and says, per metric, whether VF made them more uniform
    by the seed rule (density CV and Gini lower, entropy higher); the first study's (one tokenizer) has no verdict."""
    def row(name, density, gini, entropy):
        out = {"name": name, "tokenizer": name}
        for k, v in (("density", density), ("gini", gini), ("entropy", entropy)):
            out.update({f"{k}_seeds": v, f"{k}_spread": max(v) - min(v)})
        return out

    rows = [row("d16", [0.30, 0.31], [0.16, 0.17], [0.990, 0.991]), row("d16_vf", [0.20, 0.22], [0.16, 0.18],
                                                                         [0.995, 0.989])]
    out = T.table6_verdicts(Study("lab"), rows)
    assert [c["verdict"].split(":")[0] for c in out] == ["shown", "not shown", "not shown"]
    assert out[0]["claim"] == "VF makes the latents more uniform by density CV: d16 -> d16_vf"
    assert T.table6_verdicts(Study("lab_classic"), rows) == []
    calls = [(n, e) for _, job in J.jobs(seeds=(0, 1), tables=["table6"], ladder=V.LADDERS[8]) for m, n, e in job
             if m == "uniformity"]
    assert calls == [("d16", ()), ("d16", ("seed=1",)), ("d16_vf", ()), ("d16_vf", ("seed=1",))]


def test_on_the_f8_ladder_every_table1_row_and_sampling_setting_is_judged_by_the_seed_rule():
    """The f8 regime measures each Table 1 row and sampling setting over the DiT seeds, so each step is judged by
    the seed rule at its own gFID level, not against a yardstick measured elsewhere (the first study keeps one run)."""
    assert V.row_runs(V.LADDERS[8], (0, 1)) == [(), ("dit.seed=1", "sample.seed=1")]
    assert V.row_runs(V.LADDERS[4], (0, 1)) == [()]
    row = lambda *g: {"gfid": sum(g) / len(g), "gfid_seeds": list(g), "gfid_spread": max(g) - min(g)}
    yardstick = {"gfid": 1.0, "gfid_spread": 0.01}  # would call any change beyond 1 % real
    lower = T.step_claim("x", row(10.0, 11.0), row(6.0, 6.5), yardstick)
    assert lower["verdict"] == "lower gFID" and lower["diff_seeds"] == [-4.0, -4.5]
    noisy = T.step_claim("x", row(10.0, 11.0), row(9.0, 12.0), yardstick)  # level at this gFID's own spread
    assert noisy["verdict"] == "unresolved (the sign changes between runs)"
    assert noisy["rel_spread"] == pytest.approx(3.0 / 10.5)
    assert T.step_claim("x", row(10.0, 10.5), row(13.0, 14.0), yardstick)["verdict"] == "higher gFID"
    assert T.step_claim("x", {"gfid": 10.0}, {"gfid": 8.0}, yardstick)["verdict"] == "lower gFID"  # one run each
    calls = [e for _, job in J.jobs(seeds=(0, 1), tables=["table1"], ladder=V.LADDERS[8]) for m, n, e in job]
    for i in range(len(V.TABLE1)):
        rows = V.table1_overrides(i, "toy-XS")
        assert rows in calls and (*rows, "dit.seed=1", "sample.seed=1") in calls


def test_the_dose_response_without_tokenizer_seeds_judges_gfid_only():
    rows = [{"name": f"w{w}", "tokenizer": f"w{w}", "vf_weight": w, "gfid_seeds": [g, g + 0.1], "gfid_spread": 0.1}
            for w, g in ((0.0, 9.0), (0.05, 7.0), (0.1, 5.0), (0.5, 3.0))]
    out = T.dose_claims(rows)  # the first study's ladder: one tokenizer per variant, no rFID per seed
    assert len(out) == 1 and out[0]["verdict"] == "shown"


def test_a_steps_other_readings_run_from_before_to_after():
    """A step's class accuracy and KID are read in the row's own order, from -> to, beside its FID verdict."""
    yard = {"gfid": 2.0, "gfid_seeds": [1.9, 2.1], "gfid_spread": 0.2}
    before = {"gfid": 2.05, "gfid_seeds": [2.0, 2.1], "gfid_spread": 0.1, "class_acc": 0.6, "class_acc_n": 4000}
    after = {"gfid": 3.05, "gfid_seeds": [3.0, 3.1], "gfid_spread": 0.1, "class_acc": 0.9, "class_acc_n": 4000}
    row = T.step_claim("no guidance -> CFG 3", before, after, yard)
    assert row["verdict"] == "higher gFID" and row["readings"] == "class acc. DISAGREES with gFID (0.6 -> 0.9)"
    assert T.step_claim("back", after, before, yard)["readings"] == "class acc. DISAGREES with gFID (0.9 -> 0.6)"


def test_lab_table6_holds_each_seed_run_to_its_own_tokenizers_rfid():
    """Toy Table 6 on the f8 ladder: runs on tokenizer seed 1 are held to that tokenizer's rFID, not seed 0's (a
    d16 whose seed-1 DiTs beat seed 0's rFID but not their own must not be flagged "below rFID")."""
    from vavae_lab.analysis.uniformity import METRICS

    study = Study("lab", progress=False)
    fids = {"": 3.6, "seed=1": 1.5}  # a run's gFID by its tokenizer seed
    rfids = {(): 3.2, ("seed=1",): 1.0}
    study.generation = lambda name, *extra, n=None: {"fid": fids["seed=1" if "seed=1" in extra else ""], "n": 10}
    study.recon = lambda name, *extra: {"psnr": 20.0, "ssim": 0.5, "rfid": rfids[tuple(extra)],
                                        "recon_class_acc": 1.0}
    study.uniformity = lambda name, *extra, **kw: {**{k: {"mean": 0.2, "std": 0.01} for k in METRICS},
                                                   "n": 10000, "runs": 3}
    rows = T.table6(study)
    assert [r["rfid_runs"] for r in rows] == [[3.2, 3.2, 1.0, 1.0]] * 2
    assert [r["bound"] for r in rows] == ["no", "no"]  # 1.5 is below 3.2 but not below its own tokenizer's 1.0


def test_the_dilemma_also_asks_with_guidance_and_by_class_accuracy_under_the_same_rule():
    """With guided gFIDs and per-run class accuracy in the rows, notebook 01's table adds the CFG question and the
    class-accuracy reading (in points, falling with d is the paper's direction), each judged as a trend."""
    def row(name, gfid, cfg, acc):
        return {"name": name, "rfid_seeds": [1.0, 1.1], "rfid_spread": 0.1, "gfid_seeds": gfid,
                "gfid_spread": max(gfid) - min(gfid), "gfid_cfg_seeds": cfg, "gfid_cfg_spread": max(cfg) - min(cfg),
                "class_acc_seeds": acc, "class_acc_spread": max(acc) - min(acc)}

    rows = [row("d4", [2.0, 2.1], [4.4, 4.4], [0.70, 0.71]), row("d8", [2.2, 2.3], [3.0, 3.1], [0.68, 0.69]),
            row("d16", [2.6, 2.7], [3.5, 3.5], [0.60, 0.61])]
    out = T.dilemma_claims(rows)
    assert len(out) == 8 and out[6]["claim"].strip().startswith("with CFG 3: d4 -> d16")
    assert out[6]["verdict"].startswith("reversed")  # guided d16 beats d4 in both runs, beyond the spread
    acc = out[7]
    assert acc["claim"].strip() == "class accuracy falls with d, in points: d4 -> d16"
    assert acc["diff_seeds"] == pytest.approx([10.0, 10.0]) and acc["verdict"] == "shown"  # both steps fall
    rows[1]["class_acc_seeds"] = [0.72, 0.73]  # d4 -> d8 rises: no trend, whatever the end points say
    assert T.dilemma_claims(rows)[7]["verdict"].startswith("not shown as a trend: d4 -> d8")


def test_regime_prints_the_settings_the_notebooks_quote():
    """Notebooks' text names the preset's settings (steps, batch, grid, margins, samples, seeds); the first cell
    prints them from the config, and an override shows up there."""
    text = Study("lab", progress=False).regime()
    for said in ("32 px outline shapes", "f8, a 4 x 4 latent grid", "(d 4 / 8 / 16: 48x / 24x / 12x fewer numbers", "margins m1 = 0, m2 = 0", "every 8 steps",
                 "toy-S/1, 6,000 steps of batch 128", "2,000 samples", "tokenizer seeds 0, 1 x DiT seeds 0, 1"):
        assert said in text, said
    changed = Study("lab", ["dit.train.steps=300", "tokenizer.vf.adaptive_every=1"], progress=False).regime()
    assert "toy-S/1, 300 steps" in changed and "every 1 step\n" in changed
