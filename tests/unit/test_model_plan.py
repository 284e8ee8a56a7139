"""Plans that name your own model file: the sha256 and output keys, verification at plan load, ``run --model``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import joblib
import pytest
import skops.io as sio

from servingbench.cli import main
from servingbench.harness.plan import PlanError, load_plan, write_model_plan
from servingbench.shared_model.importer import import_model
from servingbench.shared_model.models import split_spec
from tests.unit.byo_models import Mkdir, onehot_pipeline

PLAN = """
[models.mine]
spec = "{spec}"
scenarios = ["single"]
{extra}
"""


def _plan(tmp_path: Path, spec: str, extra: str = "") -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(spec=spec, extra=extra))
    return path


def _imported(tmp_path: Path) -> Path:
    source = tmp_path / "m.skops"
    sio.dump(onehot_pipeline(), source)
    return import_model(source, models_dir=tmp_path / "models", max_rows=5).path


def test_an_imported_model_is_a_spec_and_output_travels_with_it(tmp_path: Path) -> None:
    model = _imported(tmp_path)
    plan = load_plan(_plan(tmp_path, "models/m.skops", 'output = "predict_proba"'))
    assert plan.models[0].output == "predict_proba"
    assert split_spec(plan.models[0].spec) == (str(model.resolve()), {"output": "predict_proba"})


def test_a_pickle_needs_its_sha256_beside_it(tmp_path: Path) -> None:
    source = tmp_path / "m.joblib"
    joblib.dump(onehot_pipeline(), source)
    with pytest.raises(PlanError, match=r"models\.mine\.spec: .*m\.joblib: a pickle model needs its sha256"):
        load_plan(_plan(tmp_path, "m.joblib"))
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    plan = load_plan(_plan(tmp_path, "m.joblib", f'sha256 = "{sha}"'))
    assert split_spec(plan.models[0].spec) == (str(source.resolve()), {"sha256": sha})
    assert plan.to_json()["models"]["mine"]["sha256"] == sha


def test_a_model_that_fails_verification_stops_the_plan_in_one_line(tmp_path: Path) -> None:
    source = tmp_path / "evil.pkl"
    joblib.dump(Mkdir(tmp_path / "ran"), source)
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(PlanError) as caught:
        load_plan(_plan(tmp_path, "evil.pkl", f'sha256 = "{sha}"'))
    assert "\n" not in str(caught.value) and "posix.mkdir" in str(caught.value)
    assert not (tmp_path / "ran").exists()
    model = _imported(tmp_path)
    model.write_bytes(model.read_bytes() + b"tampered")
    with pytest.raises(PlanError, match="does not match the manifest"):
        load_plan(_plan(tmp_path, "models/m.skops"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [('sha256 = "abc"', "64 hex digits"), ('output = "decision_function"', "is not one of")],
)
def test_bad_model_keys(tmp_path: Path, extra: str, message: str) -> None:
    _imported(tmp_path)
    with pytest.raises(PlanError, match=message):
        load_plan(_plan(tmp_path, "models/m.skops", extra))


def test_sha256_and_output_do_not_apply_to_bundled_models(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="apply to a model file only"):
        load_plan(_plan(tmp_path, "fast", 'output = "predict"'))


def test_run_model_writes_a_plan_with_the_fast_models_scenarios(tmp_path: Path) -> None:
    model = _imported(tmp_path)
    path = write_model_plan(model, tmp_path / "plans")
    plan = load_plan(path)
    builtin = load_plan()
    assert [m.name for m in plan.models] == ["m"]
    assert plan.models[0].scenarios == next(m for m in builtin.models if m.name == "fast").scenarios
    assert [c.name for c in plan.configs] == [c.name for c in builtin.configs]


def test_run_model_with_a_bad_file_fails_before_any_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "m.joblib"
    joblib.dump(onehot_pipeline(), source)
    assert main(["run", "--model", str(source), "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs its sha256" in err[0]
    assert not (tmp_path / "results" / "latest").exists()
