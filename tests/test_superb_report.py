"""The SUPERB report: numbers read from the runs' results files, the overall score as published."""

from __future__ import annotations

import json

import pytest

from armhubert_training.superb_report import PUBLISHED, main, overall_score


def test_overall_score_reproduces_the_published_rows():
    for name in ("HuBERT Base", "DistilHuBERT"):
        assert round(overall_score(PUBLISHED[name]), 1) == PUBLISHED[name]["overall"], name
    assert overall_score({"pr": 7.72}) is None


def write_run(folder, split, **metrics):
    folder.mkdir(parents=True)
    (folder / f"predict_{split}_results.json").write_text(
        json.dumps({f"predict_{split}_{k}": v for k, v in {**metrics, "utterances": 10}.items()}))
    return str(folder)


def test_report_reads_every_task_and_scores_the_run(tmp_path, capsys):
    base = PUBLISHED["HuBERT Base"]
    runs = {
        "pr": write_run(tmp_path / "pr", "test-clean", per=base["pr"] / 100),
        "asr": write_run(tmp_path / "asr", "test-clean", wer=base["asr"] / 100, cer=0.02),
        "ks": write_run(tmp_path / "ks", "test", accuracy=base["ks"] / 100),
        "ic": write_run(tmp_path / "ic", "test", accuracy=base["ic"] / 100),
        "sid": write_run(tmp_path / "sid", "test", accuracy=base["sid"] / 100),
        "sf": write_run(tmp_path / "sf", "test", slot_type_f1=base["sf_f1"] / 100,
                        slot_value_cer=base["sf_cer"] / 100, wer=0.3),
        "sd": write_run(tmp_path / "sd", "test", der=base["sd"] / 100, der_threshold_0_5_median_1=0.07),
    }
    # ER: the mean over folds.
    folds = [write_run(tmp_path / f"er{i}", "test", accuracy=a) for i, a in enumerate((0.6392, 0.6592))]
    argv = ["--name", "mine", "--er", *folds, "--qbe", str(base["qbe"]), "--asv", str(base["asv"]),
            "--output", str(tmp_path / "superb.md")]
    for task, run in runs.items():
        argv += [f"--{task}", run]
    rows = main(argv)
    mine = rows["mine"]
    for task in ("pr", "asr", "ks", "ic", "sid", "sf_f1", "sf_cer", "sd"):
        assert mine[task] == pytest.approx(base[task]), task
    assert main(["--sd", "6.5"])["this model"]["sd"] == 6.5  # a DER in % measured elsewhere
    assert mine["er"] == pytest.approx(64.92)
    assert round(overall_score(mine), 1) == 80.8  # HuBERT Base's numbers give its published score
    written = json.loads((tmp_path / "superb.json").read_text())
    assert written["mine"]["overall"] == pytest.approx(overall_score(mine))
    row = next(line for line in (tmp_path / "superb.md").read_text().splitlines() if line.startswith("| mine"))
    assert row.split(" | ")[1:3] == ["5.41", "6.42"] and row.rstrip(" |").endswith("80.80")
    assert "ARMHuBERT (published)" in capsys.readouterr().out


def test_report_reads_a_speaker_verification_run(tmp_path):
    run = write_run(tmp_path / "asv", "test", eer=0.0568, eer_threshold=0.4, trials=37720)
    assert main(["--asv", run, "--no-published"])["this model"]["asv"] == pytest.approx(5.68)
    assert main(["--asv", "5.11", "--no-published"])["this model"]["asv"] == pytest.approx(5.11)


def test_report_says_what_is_missing(tmp_path, capsys):
    main(["--ks", write_run(tmp_path / "ks", "test", accuracy=0.9688)])
    out = capsys.readouterr().out
    assert "needs pr, asr, qbe, sid, asv, sd, ic, sf_f1, sf_cer, er" in out
    with pytest.raises(KeyError, match="predict_test_accuracy"):
        main(["--sid", write_run(tmp_path / "wrong", "test", wer=0.1)])
    two = tmp_path / "two"
    write_run(two, "a", accuracy=0.5)
    (two / "predict_b_results.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="holds 2"):
        main(["--ks", str(two)])


def test_a_truncated_results_json_is_named_with_what_to_do(tmp_path):
    run = write_run(tmp_path / "ks", "test", accuracy=0.9688)
    results = tmp_path / "ks" / "predict_test_results.json"
    results.write_text(results.read_text()[:20])  # cut short, as by a run killed while writing
    with pytest.raises(ValueError, match=r"predict_test_results\.json is not valid JSON .*line 1.*--do_predict"):
        main(["--ks", run])
    results.write_text("[0.9688]")  # valid JSON, but no metrics object
    with pytest.raises(ValueError, match=r"predict_test_results\.json holds a list, not the metrics"):
        main(["--ks", run])


def test_er_of_fewer_than_five_folds_is_marked_as_such(tmp_path, capsys):
    folds = [write_run(tmp_path / f"er{i}", "test", accuracy=a) for i, a in ((1, 0.60), (3, 0.65))]
    rows = main(["--name", "mine", "--er", *folds, "--output", str(tmp_path / "superb.md")])
    assert rows["mine"]["er"] == pytest.approx(62.5)
    table = capsys.readouterr().out
    header, _, row = table.splitlines()[:3]
    er_column = header.split(" | ").index("ER")
    assert row.split(" | ")[er_column] == "62.50†"
    assert f"† ER of mine: from 2 fold runs ({folds[0]}, {folds[1]}), not the mean of SUPERB's 5" in table
    assert json.loads((tmp_path / "superb.json").read_text())["mine"]["er_folds"] == 2
    # Published rows and a five-fold ER carry no mark.
    five = [write_run(tmp_path / f"five{i}", "test", accuracy=0.6) for i in range(5)]
    table = (main(["--name", "mine", "--er", *five]), capsys.readouterr().out)[1]
    assert "†" not in table


def test_output_folder_is_created(tmp_path, capsys):
    output = tmp_path / "reports" / "today" / "superb.md"
    main(["--ks", write_run(tmp_path / "ks", "test", accuracy=0.9688), "--output", str(output)])
    assert output.read_text() == capsys.readouterr().out
    assert json.loads(output.with_suffix(".json").read_text())["this model"]["ks"] == pytest.approx(96.88)


def test_the_table_has_the_papers_eleven_columns_and_names_where_qbe_asv_sd_came_from(tmp_path, capsys):
    asv = write_run(tmp_path / "asv", "test", eer=0.0568)
    main(["--name", "mine", "--asv", asv, "--sd", "7.1", "--qbe", "0.0635"])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[1:12] == ["PR (PER)", "ASR (WER)", "KS", "QbE (MTWV)", "SID", "ASV (EER)", "SD (DER)",
                                         "IC", "SF F1", "SF CER", "ER"]
    mine = next(line for line in out.splitlines() if line.startswith("| mine")).split(" | ")
    assert (mine[4], mine[6], mine[7]) == ("0.0635", "5.68", "7.10")
    assert f"ASV EER: the run in {asv}" in out and "SD DER: given on the command line" in out
    assert "QbE MTWV: given on the command line" in out
