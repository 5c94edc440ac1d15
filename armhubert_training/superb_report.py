"""One SUPERB table from the results of the task runs, beside the published students.

Each task run (run_asr_ctc.py for ASR, PR and SF; run_audio_classification.py for KS, IC, SID and
ER; run_diarization.py for SD; run_speaker_verification.py for ASV) writes `predict_<split>_results.json`
into its output folder, run_query_by_example.py (QbE) `eval_results.json`. Give each task its folder (or
the JSON itself); ER takes one folder per fold and reports their mean, as SUPERB does:

    python -m armhubert_training.superb_report --name "my armhubert" \\
        --pr runs/pr --asr runs/asr --ks runs/ks --ic runs/ic --sid runs/sid \\
        --er runs/er-fold1 runs/er-fold2 runs/er-fold3 runs/er-fold4 runs/er-fold5 --sf runs/sf --sd runs/sd \\
        --qbe runs/qbe --asv runs/asv --output superb.md

The table has the columns of the paper's results (PR and ASR error rates, KS accuracy, QbE MTWV, SID
accuracy, ASV EER, SD DER, IC and ER accuracies, slot-filling F1 and CER: all in % but QbE), the
published rows, and an overall score.

Overall score. The papers give no formula; the one that reproduces every row of the Recycle-and-
Distill table (HuBERT Base 80.8, DistilHuBERT 75.9, ARMHuBERT 78.1, ...) is the plain mean of 11
numbers, error rates turned into 100 - error:
    [(100-PER) + (100-WER) + KS + 100*QbE_MTWV + SID + (100-ASV_EER) + (100-SD_DER) + IC + SF_F1
     + (100-SF_CER) + ER] / 11.
QbE: --qbe takes the output folder of run_query_by_example.py (the eval MTWV at the best dev layer),
--sd that of run_diarization.py, --asv that of run_speaker_verification.py; each also takes a number
measured elsewhere (s3prl).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# The tasks read from a run's predict_<split>_results.json: task -> (metric, the test split's name)
TASKS = {
    "pr": ("per", "test-clean"),
    "asr": ("wer", "test-clean"),
    "ks": ("accuracy", "test"),
    "ic": ("accuracy", "test"),
    "sid": ("accuracy", "test"),
    "er": ("accuracy", "test"),
    "sf_f1": ("slot_type_f1", "test"),
    "sf_cer": ("slot_value_cer", "test"),
    "sd": ("der", "test"),
}
ERROR_RATES = {"pr", "asr", "sf_cer", "asv", "sd"}  # lower is better: 100 - value enters the score
ER_FOLDS = 5  # IEMOCAP's sessions; SUPERB's ER number is the mean over the five held-out folds
PARTIAL_MARK = "†"  # beside a number that is not what SUPERB reports; a footnote under the table says why

# Published results, in %, QbE as MTWV: the Recycle-and-Distill results table (HuBERT Base and
# DistilHuBERT: all 11 numbers; the students' SF F1 and CER are not restated here).
PUBLISHED: dict[str, dict[str, float]] = {
    "HuBERT Base": dict(pr=5.41, asr=6.42, ks=96.30, qbe=0.0736, sid=81.42, asv=5.11, sd=5.88, ic=98.34,
                        sf_f1=88.53, sf_cer=25.20, er=64.92, overall=80.8),
    "DistilHuBERT": dict(pr=16.27, asr=13.37, ks=95.98, qbe=0.0511, sid=73.54, asv=8.55, sd=6.19, ic=94.99,
                         sf_f1=82.57, sf_cer=35.59, er=63.02, overall=75.9),
    "ARMHuBERT": dict(pr=7.72, asr=9.96, ks=96.88, qbe=0.0635, sid=65.03, asv=5.68, sd=7.10, ic=97.07, er=62.86,
                      overall=78.1),
    "ARMHuBERT-S": dict(pr=8.63, asr=10.82, ks=96.82, qbe=0.0720, sid=63.76, asv=5.58, sd=7.01, ic=97.02,
                        er=62.96, overall=77.5),
    "ARMwavLM-S": dict(pr=7.42, asr=10.03, ks=97.01, qbe=0.0741, sid=71.29, asv=5.99, sd=7.11, ic=97.76,
                       er=64.54, overall=78.9),
    "MaskHuBERT": dict(pr=7.30, asr=9.77, ks=96.36, qbe=0.0664, sid=62.83, asv=5.38, sd=6.79, ic=97.05, er=62.37,
                       overall=77.8),
}
SCORE_TASKS = ("pr", "asr", "ks", "qbe", "sid", "asv", "sd", "ic", "sf_f1", "sf_cer", "er")
# The table's columns, in the paper's order.
COLUMNS = {"pr": "PR (PER)", "asr": "ASR (WER)", "ks": "KS", "qbe": "QbE (MTWV)", "sid": "SID", "asv": "ASV (EER)",
           "sd": "SD (DER)", "ic": "IC", "sf_f1": "SF F1", "sf_cer": "SF CER", "er": "ER"}


def overall_score(numbers: dict[str, float]) -> float | None:
    """The mean of the 11 SUPERB numbers (error rates as 100 - error, QbE MTWV x 100); None if one is missing."""
    if any(numbers.get(task) is None for task in SCORE_TASKS):
        return None
    terms = [100 - numbers[t] if t in ERROR_RATES else 100 * numbers[t] if t == "qbe" else numbers[t]
             for t in SCORE_TASKS]
    return sum(terms) / len(terms)


def results_file(path: Path, preferred_split: str) -> Path:
    """The results JSON of a run: `path` itself, or the one `predict_*_results.json` in the folder
    (the test split's when there are several)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a results JSON nor a run folder.")
    found = sorted(path.glob("predict_*_results.json"))
    if len(found) == 1:
        return found[0]
    preferred = path / f"predict_{preferred_split}_results.json"
    if preferred in found:
        return preferred
    raise FileNotFoundError(f"{path} holds {len(found)} predict_*_results.json files "
                            f"({', '.join(f.name for f in found) or 'none'}): give the test split's file itself.")


def read_metric(path: Path, metric: str, preferred_split: str) -> float:
    """`metric` of one run in % (results JSONs store fractions, keyed `predict_<split>_<metric>` as the
    Trainer's `save_metrics("predict_<split>", ...)` writes them)."""
    file = results_file(path, preferred_split)
    try:
        results = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{file} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg}): it was "
                         "cut short or damaged, e.g. by a run stopped while writing it. Run the task's script "
                         "again with --do_predict on the trained model to write it anew.") from error
    if not isinstance(results, dict):
        raise ValueError(f"{file} holds a {type(results).__name__}, not the metrics object a task run writes: "
                         "give the run's predict_<split>_results.json.")
    key = file.name.removesuffix("results.json") + metric
    if key not in results:
        raise KeyError(f"{file} has no `{key}`: is it a run of the right task?")
    return 100 * float(results[key])


# Tasks whose number may also be given as measured elsewhere (s3prl) instead of a run folder.
GIVEN_AS_NUMBER = {"qbe", "asv", "sd"}


def number_given(value: str) -> float | None:
    """`value` as a number when it is one (a result measured elsewhere), else None (a run to read)."""
    try:
        return float(value)
    except ValueError:
        return None


def task_value(task: str, run: str, metric: str, split: str) -> float:
    """One run's number in %: from its results JSON, or, for the tasks in GIVEN_AS_NUMBER, as given."""
    given = number_given(run) if task in GIVEN_AS_NUMBER else None
    return given if given is not None else read_metric(Path(run), metric, split)


# ---- QbE: a run_query_by_example.py run (or a published MTWV) -----------------------------------


def read_qbe(value: str) -> tuple[float, str]:
    """(MTWV, where it came from) of --qbe: a number as given, or a run_query_by_example.py output
    folder (or its eval_results.json): the eval MTWV at the layer the dev split selected."""
    given = number_given(value)
    if given is not None:
        return given, "given on the command line"
    path = Path(value)
    file = path / "eval_results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"--qbe {value}: neither an MTWV nor a run_query_by_example.py output folder "
                                "(with eval_results.json).")
    results = json.loads(file.read_text())
    if "mtwv" not in results or "layer" not in results:
        raise KeyError(f"{file} has no `mtwv` and `layer`: is it run_query_by_example.py's eval_results.json?")
    return float(results["mtwv"]), f"{file}: eval split, layer {results['layer']}, scorer {results.get('scorer')}"


def collect(args: argparse.Namespace) -> dict[str, float]:
    """The run's numbers in % (QbE as MTWV), from the result files and the --qbe/--asv/--sd values."""
    numbers: dict[str, float] = {}
    for task, (metric, split) in TASKS.items():
        paths = getattr(args, "sf" if task.startswith("sf_") else task)
        if paths:
            values = [task_value(task, p, metric, split) for p in paths]
            numbers[task] = sum(values) / len(values)  # ER: the mean over folds
    if args.qbe is not None:
        numbers["qbe"] = read_qbe(args.qbe)[0]
    if args.asv is not None:  # a run_speaker_verification.py run's test EER (stored as a fraction), or an EER in %
        numbers["asv"] = task_value("asv", args.asv, "eer", "test")
    return numbers


def origin(value: str) -> str:
    """Where a --asv/--sd value came from: a number given on the command line, or a run's results."""
    if number_given(value) is not None:
        return "given on the command line (measured elsewhere)"
    return f"the run in {value}"


def format_value(value: float | None, task: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}" if task == "qbe" else f"{value:.2f}"  # MTWV is a fraction, the others are in %


def table(rows: dict[str, dict[str, float]], marked: dict[str, set[str]] | None = None) -> str:
    """A GitHub markdown table, one row per model; `marked`: row -> tasks whose cell gets PARTIAL_MARK."""
    headers = ["model", *COLUMNS.values(), "overall"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, numbers in rows.items():
        overall = numbers.get("overall", overall_score(numbers))
        marks = (marked or {}).get(name, set())
        cells = [name] + [format_value(numbers.get(task), task) + (PARTIAL_MARK if task in marks else "")
                          for task in COLUMNS]
        cells.append(format_value(overall))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="this model", help="Name of the evaluated model's row.")
    for task, help_text in [("pr", "run_asr_ctc.py phoneme-recognition run (PER, test-clean)"),
                            ("asr", "run_asr_ctc.py SUPERB ASR run (WER, test-clean)"),
                            ("ks", "keyword-spotting run (accuracy, Speech Commands test set)"),
                            ("ic", "intent-classification run (accuracy, all three slots)"),
                            ("sid", "speaker-identification run (accuracy, VoxCeleb1 test)"),
                            ("er", "emotion-recognition runs, one per fold (mean accuracy)"),
                            ("sf", "slot-filling run (slot-type F1 and slot-value CER)"),
                            ("sd", "run_diarization.py run (DER, the lowest of its RTTM settings; or a DER in %% "
                                   "measured elsewhere)")]:
        parser.add_argument(f"--{task}", nargs="+", metavar="RUN", help=f"Output folder or results JSON of the {help_text}.")
    parser.add_argument("--qbe", metavar="RUN_OR_MTWV", help="Output folder (or eval_results.json) of the "
                        "run_query_by_example.py run, or an MTWV from elsewhere (e.g. 0.0736); needed for the "
                        "overall score.")
    parser.add_argument("--asv", metavar="RUN_OR_EER", help="Output folder or results JSON of the "
                        "run_speaker_verification.py run (test EER), or an ASV EER in %% from elsewhere; needed "
                        "for the overall score.")
    parser.add_argument("--no-published", action="store_true", help="Leave out the published rows.")
    parser.add_argument("--output", type=Path, help="Also write the table (markdown) here, and the numbers as JSON "
                                                    "beside it (same name, .json).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    numbers = collect(args)
    if not numbers:
        raise SystemExit("Give at least one task run (--pr, --asr, --ks, --ic, --sid, --er, --sf, --qbe, --asv, "
                         "--sd); see --help.")
    rows = {args.name: numbers}
    if not args.no_published:
        rows.update((f"{name} (published)", values) for name, values in PUBLISHED.items())
    partial_er = bool(args.er) and len(args.er) != ER_FOLDS
    text = table(rows, marked={args.name: {"er"}} if partial_er else None)
    if partial_er:
        text += (f"\n\n{PARTIAL_MARK} ER of {args.name}: from {len(args.er)} fold run{'s' * (len(args.er) > 1)} "
                 f"({', '.join(args.er)}), not the mean of SUPERB's {ER_FOLDS} folds (one run per held-out IEMOCAP "
                 "session, --fold 1 to 5); the overall score uses this number.")
    missing = [task for task in SCORE_TASKS if task not in numbers]
    if missing:
        text += (f"\n\nOverall score of {args.name}: needs {', '.join(missing)} (the mean of 11 SUPERB numbers; "
                 "see `python -m armhubert_training.superb_report --help`).")
    given = {"QbE MTWV": args.qbe and read_qbe(args.qbe)[1], "ASV EER": args.asv and origin(args.asv),
             "SD DER": args.sd and origin(args.sd[0])}
    if any(given.values()):
        text += (f"\n\nWhere {args.name}'s QbE, ASV and SD numbers came from: "
                 + "; ".join(f"{task}: {where}" for task, where in given.items() if where) + ".")
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
        written = {name: {**values, "overall": values.get("overall", overall_score(values))}
                   for name, values in rows.items()}
        if args.er:
            written[args.name]["er_folds"] = len(args.er)
        args.output.with_suffix(".json").write_text(json.dumps(written, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
