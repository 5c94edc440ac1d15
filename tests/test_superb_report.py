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
    }
    # ER: the mean over folds.
    folds = [write_run(tmp_path / f"er{i}", "test", accuracy=a) for i, a in enumerate((0.6392, 0.6592))]
    argv = ["--name", "mine", "--er", *folds, "--qbe", str(base["qbe"]), "--asv", str(base["asv"]),
            "--sd", str(base["sd"]), "--output", str(tmp_path / "superb.md")]
    for task, run in runs.items():
        argv += [f"--{task}", run]
    rows = main(argv)
    mine = rows["mine"]
    for task in ("pr", "asr", "ks", "ic", "sid", "sf_f1", "sf_cer"):
        assert mine[task] == pytest.approx(base[task]), task
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
