"""Request bodies built from a model's sample rows: seeded, cycling, records for named models, lists otherwise."""

from __future__ import annotations

import json

import pytest

from servingbench.shared_model.columns import Column, Output
from servingbench.shared_model.samples import request_bodies
from servingbench.shared_model.types import ModelInfo

NAMED = ModelInfo(
    name="m",
    version="1",
    sha256="0" * 64,
    n_features=2,
    feature_names=("age", "city"),
    sklearn_version="x",
    sample=tuple({"age": age, "city": city} for age, city in [(30, "Oslo"), (41, "Bergen"), (52, None)]),
    columns=(Column("age", "integer"), Column("city", "category", nullable=True)),
    output=Output(),
    sample_source="model",
)
LISTED = ModelInfo(name="l", version="1", sha256="0" * 64, n_features=2, feature_names=("a", "b"), sklearn_version="x")


def test_single_bodies_cycle_through_every_row_in_a_seeded_order() -> None:
    bodies = request_bodies(NAMED, endpoint="/predict", count=6, seed=7)
    docs = [json.loads(body) for body in bodies]
    assert all(list(doc) == ["features"] for doc in docs)
    first, second = docs[:3], docs[3:]
    assert first == second  # a full pass, then the same pass again
    assert sorted(d["features"]["age"] for d in first) == [30, 41, 52]
    assert bodies == request_bodies(NAMED, endpoint="/predict", count=6, seed=7)
    orders = {request_bodies(NAMED, endpoint="/predict", count=3, seed=seed) for seed in range(10)}
    assert len(orders) > 1


def test_batches_are_built_from_the_rows() -> None:
    bodies = request_bodies(NAMED, endpoint="/predict/batch", batch_size=4, count=2, seed=1)
    docs = [json.loads(body) for body in bodies]
    assert [len(doc["instances"]) for doc in docs] == [4, 4]
    assert {r["age"] for doc in docs for r in doc["instances"]} == {30, 41, 52}


def test_by_default_one_pass_over_the_rows() -> None:
    assert len(request_bodies(NAMED, endpoint="/predict", seed=0)) == 3
    assert len(request_bodies(NAMED, endpoint="/predict/batch", batch_size=2, seed=0)) == 2


def test_the_get_model_document_is_a_source_too() -> None:
    doc = json.loads(json.dumps(NAMED.as_json()))
    assert request_bodies(doc, endpoint="/predict", count=3, seed=2) == request_bodies(
        NAMED, endpoint="/predict", count=3, seed=2
    )


def test_a_model_without_sample_rows_gets_the_old_row() -> None:
    assert request_bodies(LISTED, endpoint="/predict", count=1, seed=0) == (b'{"features":[0.0,0.1]}',)
    bodies = request_bodies({"n_features": 2}, endpoint="/predict/batch", batch_size=2, count=1, seed=0)
    assert json.loads(bodies[0]) == {"instances": [[0.0, 0.1], [0.0, 0.1]]}


@pytest.mark.parametrize(
    ("endpoint", "batch_size", "count"),
    [("/nope", 1, 1), ("/predict", 2, 1), ("/predict/batch", 0, 1), ("/predict", 1, 0)],
)
def test_bad_arguments(endpoint: str, batch_size: int, count: int) -> None:
    with pytest.raises(ValueError):
        request_bodies(NAMED, endpoint=endpoint, batch_size=batch_size, count=count, seed=0)
