"""The input schema and output read from fitted DataFrame models, and probed on the model itself."""

from __future__ import annotations

from typing import Any

import pytest

from servingbench.shared_model.columns import Column, Output
from servingbench.shared_model.importer import describe_estimator
from servingbench.shared_model.introspect import column_hints, feature_names, infer_columns, infer_output
from servingbench.shared_model.types import ModelError
from tests.unit.byo_models import (
    CITIES,
    CLASSES,
    COLUMNS,
    frame,
    hgb_explicit,
    hgb_from_dtype,
    numeric_array_pipeline,
    numeric_frame_pipeline,
    onehot_pipeline,
    selector_pipeline,
)

SAMPLE_ROWS = 50


def _columns(model: Any, *, with_sample: bool = False) -> dict[str, Column]:
    sample = frame(SAMPLE_ROWS, seed=1) if with_sample else None
    described = describe_estimator(model, sample=sample, sample_name="s.csv", max_rows=SAMPLE_ROWS)
    return {column.name: column for column in described.columns}


def test_onehot_pipeline_refuses_unseen_cities_and_nulls() -> None:
    columns = _columns(onehot_pipeline())
    assert list(columns) == list(COLUMNS)
    city = columns["city"]
    assert (city.kind, city.categories, city.restricted, city.nullable) == ("category", CITIES, True, False)
    assert (columns["age"].kind, columns["age"].nullable) == ("number", False)
    assert columns["member"].nullable  # dropped by the ColumnTransformer: the model never looks at it


def test_a_sample_file_says_which_columns_are_integers_and_booleans() -> None:
    columns = _columns(onehot_pipeline(), with_sample=True)
    assert [columns[name].kind for name in COLUMNS] == ["integer", "number", "category", "boolean"]


def test_hist_gradient_boosting_from_dtype_knows_its_categories_and_takes_missing_values() -> None:
    columns = _columns(hgb_from_dtype())
    city = columns["city"]
    assert (city.kind, city.categories) == ("category", CITIES)
    assert not city.restricted  # HistGradientBoosting maps an unseen category to "missing" itself
    assert all(column.nullable for column in columns.values())


def test_hist_gradient_boosting_with_named_categorical_features() -> None:
    city = _columns(hgb_explicit())["city"]
    assert (city.kind, city.categories) == ("category", CITIES)


def test_columns_selected_by_name_pattern_and_imputed_take_null() -> None:
    columns = _columns(selector_pipeline())
    assert columns["age"].nullable and columns["income"].nullable
    assert columns["city"].categories == CITIES and not columns["city"].restricted


def test_a_plain_numeric_pipeline_on_named_columns_takes_numbers_in_the_scaler_range() -> None:
    model = numeric_frame_pipeline()
    columns = _columns(model)
    assert [(c.kind, c.categories) for c in columns.values()] == [("number", None), ("number", None)]
    hint = column_hints(model, ["age", "income"])["income"]
    assert hint.low is not None and hint.high is not None
    assert hint.low < frame()["income"].mean() < hint.high


def test_a_model_fitted_on_an_array_has_no_names_and_list_samples() -> None:
    model = numeric_array_pipeline()
    assert feature_names(model) is None
    described = describe_estimator(model, max_rows=SAMPLE_ROWS)
    assert described.columns == ()
    assert described.feature_names == ("x0", "x1")
    assert len(described.sample) == SAMPLE_ROWS and all(len(row) == 2 for row in described.sample)


def test_outputs_of_classifiers_and_regressors() -> None:
    assert infer_output(onehot_pipeline(), "predict") == Output("predict", "label", CLASSES)
    probabilities = infer_output(onehot_pipeline(), "predict_proba")
    assert (probabilities.kind, probabilities.class_names) == ("probabilities", CLASSES)
    assert infer_output(numeric_frame_pipeline(), "predict") == Output("predict", "value")
    with pytest.raises(ModelError, match="predict_proba"):
        infer_output(numeric_frame_pipeline(), "predict_proba")


def test_a_sample_without_the_model_columns_is_refused() -> None:
    with pytest.raises(ModelError, match="lacks the model's columns"):
        infer_columns(onehot_pipeline(), COLUMNS, frame()[["age"]])


def test_column_json_round_trip_and_schema() -> None:
    column = Column("city", "category", nullable=True, categories=CITIES, unknown_ok=False)
    assert Column.from_json(column.as_json()) == column
    assert column.json_schema() == {"type": ["string", "null"], "enum": [*CITIES, None]}
    assert Column("n", "integer").json_schema()["type"] == "integer"
