"""The plan knobs the verdict reads: ``equivalence_margin`` and ``reference``, checked and recorded in the bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from servingbench.harness.plan import PlanError, load_plan


def _plan_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_defaults_are_a_five_percent_margin_and_no_reference() -> None:
    plan = load_plan(None)
    assert plan.equivalence_margin == 0.05 and plan.reference is None
    recorded = plan.to_json()
    assert recorded["equivalence_margin"] == 0.05 and recorded["reference"] is None


def test_both_knobs_are_read_and_recorded(tmp_path: Path) -> None:
    plan = load_plan(_plan_file(tmp_path, 'equivalence_margin = 0.1\nreference = "flask-gunicorn-sync"\n'))
    assert plan.equivalence_margin == 0.1 and plan.reference == "flask-gunicorn-sync"
    assert plan.to_json()["equivalence_margin"] == 0.1 and plan.to_json()["reference"] == "flask-gunicorn-sync"


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", '"5%"', "true"])
def test_a_margin_outside_zero_to_one_is_a_plan_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(PlanError, match="equivalence_margin: ") as error:
        load_plan(_plan_file(tmp_path, f"equivalence_margin = {value}\n"))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ['"nope"', "3"])
def test_a_reference_that_names_no_config_is_a_plan_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(PlanError, match=r"reference: .* is not one of the plan's configs \('fastapi-uvicorn'"):
        load_plan(_plan_file(tmp_path, f"reference = {value}\n"))
