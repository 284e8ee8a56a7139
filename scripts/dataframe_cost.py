"""What named columns cost: microseconds per request of the predict core, DataFrame path against list path.

    .venv/bin/python scripts/dataframe_cost.py --repetitions 20 --requests 2000
    .venv/bin/python scripts/dataframe_cost.py --repetitions 20 --requests 500 --endpoint /predict/batch --batch-size 32

One process, no HTTP: the same numeric pipeline (StandardScaler + Ridge on ``--columns`` columns) is fitted twice on
the same data, once on a DataFrame with column names (requests are records; the core checks them and builds a
DataFrame) and once on the array (requests are lists; the core builds a float64 array). Both are driven through
``PredictService.predict`` / ``predict_batch`` with the same row values. Each repetition times both arms in a
seeded random order (interleaved, so drift hits both alike), ``--requests`` requests each; the unit of comparison is
the repetition. Prints each arm's median microseconds per request and the median paired difference (DataFrame minus
list) with an order-statistic interval over repetitions (its exact level printed); below 5 repetitions only the
range, as the project's rules say.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from servingbench.shared_model.threads import limit_native_threads

limit_native_threads(1)  # before numpy loads: one BLAS thread, as every server worker has

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from servingbench.reports.stats import median_interval  # noqa: E402
from servingbench.shared_model.artifacts import SklearnModel  # noqa: E402
from servingbench.shared_model.importer import describe_estimator  # noqa: E402
from servingbench.shared_model.service import PredictService, Reply  # noqa: E402
from servingbench.shared_model.types import ModelInfo  # noqa: E402

MIN_REPETITIONS_FOR_INTERVAL = 5  # the project's rule: no interval from fewer repetitions
TRAIN_ROWS = 500
SAMPLE_ROWS = 256  # distinct rows the requests cycle through
WARMUP_REQUESTS = 200
NS_PER_US = 1_000.0
SEED = 20_261_202
SINGLE = "/predict"


@dataclass(frozen=True)
class Arm:
    name: str
    call: Callable[[bytes], Reply]
    bodies: tuple[bytes, ...]


def _service(estimator: object, names: Sequence[str]) -> PredictService:
    described = describe_estimator(estimator, max_rows=8, seed=SEED)
    info = ModelInfo(
        name="cost",
        version="1",
        sha256="0" * 64,
        n_features=len(names),
        feature_names=tuple(names),
        sklearn_version="",
        sample=described.sample,
        columns=described.columns,
        output=described.output,
        sample_source=described.sample_source,
    )
    return PredictService(SklearnModel(estimator, info))


def _bodies(
    rows: np.ndarray, names: Sequence[str], *, named: bool, endpoint: str, batch: int, count: int
) -> tuple[bytes, ...]:
    def encode(row: np.ndarray) -> object:
        values = [float(v) for v in row]
        return dict(zip(names, values, strict=True)) if named else values

    bodies = []
    for index in range(count):
        picked = [encode(rows[(index * batch + k) % len(rows)]) for k in range(batch)]
        doc = {"features": picked[0]} if endpoint == SINGLE else {"instances": picked}
        bodies.append(json.dumps(doc).encode())
    return tuple(bodies)


def _arms(args: argparse.Namespace) -> list[Arm]:
    rng = np.random.default_rng(SEED)
    names = [f"f{i}" for i in range(args.columns)]
    x = rng.normal(size=(TRAIN_ROWS, args.columns))
    y = x @ rng.normal(size=args.columns)
    on_frame = make_pipeline(StandardScaler(), Ridge()).fit(pd.DataFrame(x, columns=names), y)
    on_array = make_pipeline(StandardScaler(), Ridge()).fit(x, y)
    rows = rng.normal(size=(SAMPLE_ROWS, args.columns))
    arms = []
    for name, estimator, named in (("dataframe", on_frame, True), ("list", on_array, False)):
        service = _service(estimator, names)
        call = service.predict if args.endpoint == SINGLE else service.predict_batch
        bodies = _bodies(rows, names, named=named, endpoint=args.endpoint, batch=args.batch_size, count=args.requests)
        reply = call(bodies[0])
        if reply.status != 200:
            raise SystemExit(f"{name}: the core answered {reply.status}: {reply.body[:200]!r}")
        arms.append(Arm(name, call, bodies))
    return arms


def _us_per_request(arm: Arm) -> float:
    call, bodies = arm.call, arm.bodies
    start = time.perf_counter_ns()
    for body in bodies:
        call(body)
    return (time.perf_counter_ns() - start) / NS_PER_US / len(bodies)


def _describe(label: str, values: Sequence[float]) -> str:
    if len(values) < MIN_REPETITIONS_FOR_INTERVAL:
        return f"{label}: range {min(values):.1f} .. {max(values):.1f} us ({len(values)} repetitions: no interval)"
    estimate = median_interval(values)
    level = f"{estimate.level:.1%}" if estimate.level is not None else "no"
    return f"{label}: median {estimate.median:.1f} us [{level} interval {estimate.ci_low:.1f}, {estimate.ci_high:.1f}]"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repetitions", type=int, default=20, help="interleaved repetitions (default 20)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm per repetition (default 2000)")
    parser.add_argument("--columns", type=int, default=10, help="numeric columns (default 10, as the bundled models)")
    parser.add_argument("--endpoint", choices=(SINGLE, "/predict/batch"), default=SINGLE)
    parser.add_argument("--batch-size", type=int, default=1, help="rows per batch request (default 1)")
    args = parser.parse_args(argv)
    if args.repetitions < 1 or args.requests < 1 or args.columns < 1 or args.batch_size < 1:
        parser.error("--repetitions, --requests, --columns and --batch-size must be at least 1")
    if args.endpoint == SINGLE and args.batch_size != 1:
        parser.error("--batch-size applies to /predict/batch")
    arms = _arms(args)
    for arm in arms:  # warm caches, pydantic and pandas code paths
        for body in arm.bodies[:WARMUP_REQUESTS]:
            arm.call(body)
    order_rng = random.Random(SEED)
    times: dict[str, list[float]] = {arm.name: [] for arm in arms}
    for _ in range(args.repetitions):
        for arm in order_rng.sample(arms, len(arms)):
            times[arm.name].append(_us_per_request(arm))
    differences = [frame - array for frame, array in zip(times["dataframe"], times["list"], strict=True)]
    print(f"{args.endpoint} batch={args.batch_size} columns={args.columns} requests/arm/rep={args.requests}")
    print(_describe("list path (array)       ", times["list"]))
    print(_describe("dataframe path (records)", times["dataframe"]))
    print(_describe("difference per request  ", differences))
    return 0


if __name__ == "__main__":
    sys.exit(main())
