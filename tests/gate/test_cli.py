"""``servingbench check`` and ``calibrate`` on canned bundles: exit statuses, the three outputs, the summary."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from servingbench.cli import main
from servingbench.gate import EXIT_NO_VERDICT, EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, NOISE_FILE
from servingbench.harness.speed import SPEED_PROBE

from .canned import OTHER_MACHINE, Shape, ab_bundle, calibration_bundles, single_bundle

QUIET = Shape(drift_sd=0.02, noise_sd=0.01)


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("shape", "expected"),
    [(Shape(), EXIT_PASS), (Shape(head_factor=1.3), EXIT_REGRESSION), (Shape(repetitions=3), EXIT_NO_VERDICT)],
)
def test_check_bundle_exits_with_the_status_and_writes_three_outputs(
    tmp_path: Path, shape: Shape, expected: int
) -> None:
    bundle = ab_bundle(tmp_path / "ab", shape)
    code, out, _ = _run("check", "--bundle", str(bundle), "--out", str(tmp_path / "ci"))
    assert code == expected
    written = tmp_path / "ci" / "check"
    doc = json.loads((written / "check.json").read_text())
    assert doc["format"] == "servingbench-check" and doc["exit_code"] == expected and doc["mode"] == "ab"
    assert f"(exit {expected})" in (written / "check.md").read_text()
    assert (written / "check.html").read_text().startswith("<!doctype html>")
    assert f"servingbench check: {doc['reason']}" in out


def test_json_goes_to_stdout_and_the_summary_is_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = ab_bundle(tmp_path / "ab", Shape(head_factor=1.3))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, _ = _run("check", "--bundle", str(bundle), "--out", str(tmp_path / "ci"), "--json", "--summary")
    assert code == EXIT_REGRESSION
    assert json.loads(out)["status"] == "regression"
    text = summary.read_text()
    assert text.startswith("earlier step\n") and ":x: servingbench check: REGRESSION" in text
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    code, _, err = _run("check", "--bundle", str(bundle), "--out", str(tmp_path / "ci"), "--summary")
    assert code == EXIT_REGRESSION and "GITHUB_STEP_SUMMARY is not set" in err


def test_usage_errors_exit_2_and_differ_from_no_verdict(tmp_path: Path) -> None:
    assert _run("check")[0] == EXIT_USAGE  # no mode
    assert _run("check", "--base", "HEAD", "--bundle", "x")[0] == EXIT_USAGE  # two modes
    code, _, err = _run("check", "--bundle", str(tmp_path), "extra")
    assert code == EXIT_USAGE and "CURRENT and --runs apply to --baseline only" in err
    code, _, err = _run("check", "--base", "HEAD", "--runs", "3")
    assert code == EXIT_USAGE and "CURRENT and --runs apply to --baseline only" in err
    code, _, err = _run("check", "--baseline", str(tmp_path), str(tmp_path), "--runs", "3")
    assert code == EXIT_USAGE and "not both" in err
    code, _, err = _run("check", "--baseline", str(tmp_path), "--runs", "0")
    assert code == EXIT_USAGE and "--runs must be at least 1" in err
    code, _, err = _run("check", "--bundle", str(tmp_path), "--noise", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and "no noise file" in err
    code, _, err = _run("check", "--baseline", str(tmp_path / "nothing"), str(tmp_path))
    assert code == EXIT_USAGE and "make baseline" in err
    code, _, _ = _run("check", "--bundle", str(tmp_path / "not-a-bundle"), "--out", str(tmp_path / "ci"))
    assert code == EXIT_NO_VERDICT


def test_help_documents_the_exit_statuses() -> None:
    code, out, _ = _run("check", "--help")
    assert code == 0
    for line in ("0    pass", "1    regression", "2    usage error", "3    no verdict"):
        assert line in out


def test_calibrate_then_check_against_the_baseline(tmp_path: Path) -> None:
    runs = calibration_bundles(tmp_path / "runs", QUIET)
    baseline = tmp_path / "baselines" / "ci"
    assert _run("calibrate", "--runs", "3")[0] == EXIT_USAGE
    code, out, _ = _run("calibrate", "--baseline", str(baseline), "--from", *map(str, runs[:4]))
    assert code == EXIT_NO_VERDICT  # four runs are not enough for a prediction interval
    code, out, _ = _run("calibrate", "--baseline", str(baseline), "--from", *map(str, runs))
    assert code == EXIT_PASS and (baseline / NOISE_FILE).is_file() and "prediction interval" in out
    assert f"of {len(runs)} runs, {len(runs)} made before the probe had a kind" in out  # QUIET bundles: no probe
    same = single_bundle(tmp_path / "same", QUIET.with_(seed=9))
    slower = single_bundle(tmp_path / "slower", QUIET.with_(seed=9, head_factor=1.3))
    elsewhere = single_bundle(tmp_path / "elsewhere", QUIET.with_(seed=9, machine_id=OTHER_MACHINE, head_factor=1.3))
    out_dir = str(tmp_path / "ci")
    assert _run("check", "--baseline", str(baseline), str(same), "--out", out_dir)[0] == EXIT_PASS
    assert _run("check", "--baseline", str(baseline), str(slower), "--out", out_dir)[0] == EXIT_REGRESSION
    code, out, _ = _run("check", "--baseline", str(baseline), str(elsewhere), "--out", out_dir)
    assert code == EXIT_NO_VERDICT and "absolute figures from two machines do not compare" in out
    # Several finished runs are judged together: one from another machine spoils them all.
    code, out, _ = _run("check", "--baseline", str(baseline), str(same), str(slower), "--out", out_dir)
    assert code == EXIT_REGRESSION and "the mean of 2 new runs" in out
    code, out, _ = _run("check", "--baseline", str(baseline), str(same), str(elsewhere), "--out", out_dir)
    assert code == EXIT_NO_VERDICT and "absolute figures from two machines do not compare" in out


def test_calibrate_says_which_probe_it_fitted_and_why_it_did_not(tmp_path: Path) -> None:
    speeds = (1.0, 1.1, 0.9, 1.2, 1.05, 0.95)
    probed = calibration_bundles(tmp_path / "probed", QUIET.with_(probe=True), (1.0,) * 6, speeds)
    code, out, _ = _run("calibrate", "--baseline", str(tmp_path / "b1"), "--from", *map(str, probed))
    assert code == EXIT_PASS and f"machine-speed probe ({SPEED_PROBE}): sd" in out
    code, out, _ = _run("calibrate", "--baseline", str(tmp_path / "b2"), "--from", *map(str, probed[:5]))
    assert code == EXIT_PASS and "the machine-speed probe's fit needs 6 runs, this calibration has 5" in out
    for path in probed[:2]:  # two runs of another probe: never fitted with this one's
        doc = json.loads((path / "results.json").read_text())
        doc["environment"]["speed_probe"] = "load-9it-9s"
        (path / "results.json").write_text(json.dumps(doc))
    code, out, _ = _run("calibrate", "--baseline", str(tmp_path / "b3"), "--from", *map(str, probed))
    assert code == EXIT_PASS and "of 6 runs, 2 made with another kind of machine-speed probe" in out
