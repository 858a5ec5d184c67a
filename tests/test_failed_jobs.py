"""The failed-jobs summary at the end of a run (sbt.failed_jobs, the Snakefile's onerror).

tests/test_reliability.py checks it at the end of a real failing run; these check how it
reads Snakemake's error blocks."""

from __future__ import annotations

from sbt.failed_jobs import failed_jobs, failure_summary

RUN_LOG = """\
Error in rule evaluate_base:
    message: None
    jobid: 7
    output: results/eval/tiny/base/ethics_justice.json
    log: {log} (check log file(s) for error details)
    shell:
        python -m sbt.evaluate ...
        (one of the commands exited with non-zero exit code)
Finished jobid: 6 (Rule: result_base)
Error in rule evaluate_base:
    jobid: 7
    output: results/eval/tiny/base/ethics_justice.json
    log: {log} (check log file(s) for error details)
Error in rule aggregate:
    jobid: 9
    log: logs/aggregate.log, logs/missing.log (check log file(s) for error details)
"""


def test_each_failed_job_once_with_its_log_tail(tmp_path):
    job_log = tmp_path / "ethics_justice.log"
    job_log.write_text("loading\n" + "x" * 300 + "\nsecond\nerror: data.json: record 3\n")
    run_log = tmp_path / "run.log"
    run_log.write_text(RUN_LOG.format(log=job_log))

    jobs = failed_jobs(run_log.read_text().splitlines())
    assert [(job["rule"], job.get("output")) for job in jobs] == [
        ("evaluate_base", "results/eval/tiny/base/ethics_justice.json"),
        ("aggregate", None),
    ]
    summary = failure_summary(str(run_log)).splitlines()
    assert summary[0] == "2 failed job(s):"
    assert summary[1] == "  evaluate_base -> results/eval/tiny/base/ethics_justice.json"
    assert summary[2] == f"    log: {job_log}"
    assert summary[3] == "      | " + "x" * 200  # the last three lines, each cut to 200
    assert summary[4:6] == ["      | second", "      | error: data.json: record 3"]
    assert summary[6:] == [
        "  aggregate -> ?",
        "    log: logs/aggregate.log",
        "    log: logs/missing.log",
    ]


def test_nothing_failed_or_no_log_says_nothing(tmp_path):
    run_log = tmp_path / "run.log"
    run_log.write_text("Finished jobid: 1 (Rule: all)\n")
    assert failure_summary([run_log]) == ""
    assert failure_summary(None) == ""
    assert failure_summary(tmp_path / "absent.log") == ""
