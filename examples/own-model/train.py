"""A training job as a team would write it: a model fitted on a pandas DataFrame, saved with joblib.

    .venv/bin/python examples/own-model/train.py [--model onehot|hgb|numeric|numeric-array] [--out DIR] [--rows N]

Generates a churn-like table (age, tenure_months, monthly_spend, plan, region, autopay) and fits one of:

- ``onehot`` (default): a ColumnTransformer (scaled numbers, one-hot strings) and a logistic regression;
- ``hgb``: a HistGradientBoostingClassifier with ``plan`` and ``region`` as pandas categories
  (``categorical_features="from_dtype"``);
- ``numeric``: a plain StandardScaler + Ridge on the numeric columns, fitted on the DataFrame (named columns);
- ``numeric-array``: the same fitted on the bare array (no names: requests stay lists of numbers).

It writes to ``--out`` (default: this folder):

- ``churn.joblib`` (``churn-<model>.joblib`` for the others): the model, the usual artefact of a training job;
- the same name plus ``.sha256``: its sha256, recorded where the file was made (import-model asks for it);
- ``rows.csv``: a few hundred rows of the same table, standing in for real traffic.

Then follow README.md beside this file: import the model, run the quick plan on it, read the report.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
SEED = 7
TRAIN_ROWS = 5000
SAMPLE_ROWS = 500
PLANS = ("basic", "plus", "family", "business")
REGIONS = ("north", "south", "east", "west", "capital")
NUMBERS = ["age", "tenure_months", "monthly_spend"]
STRINGS = ["plan", "region"]
HGB_ITERATIONS = 100
MODELS = ("onehot", "hgb", "numeric", "numeric-array")


def make_rows(n_rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """A generated customer table: two integers, one float, two string categories, one boolean."""
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n_rows),
            "tenure_months": rng.integers(0, 120, n_rows),
            "monthly_spend": rng.gamma(2.0, 25.0, n_rows).round(2),
            "plan": rng.choice(PLANS, n_rows, p=[0.4, 0.3, 0.2, 0.1]),
            "region": rng.choice(REGIONS, n_rows),
            "autopay": rng.random(n_rows) < 0.6,
        }
    )


def churned(rows: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Who left: short tenure, high spend on the basic plan, no autopay; with noise."""
    score = -0.03 * rows["tenure_months"] + 0.01 * rows["monthly_spend"] + 0.8 * (rows["plan"] == "basic")
    score = score - 0.7 * rows["autopay"] + rng.normal(0.0, 0.5, len(rows))
    return np.where(score > np.median(score), "churned", "stayed")


def fit(kind: str, rows: pd.DataFrame, rng: np.random.Generator) -> object:
    """Fit the ``kind`` of model on ``rows`` (see the module docstring)."""
    target = churned(rows, rng)
    if kind == "hgb":
        categorical = rows.astype({name: "category" for name in STRINGS})
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=HGB_ITERATIONS)
        return model.fit(categorical, target)
    spend = rows["monthly_spend"].to_numpy()
    if kind == "numeric":
        return make_pipeline(StandardScaler(), Ridge()).fit(rows[NUMBERS], spend)
    if kind == "numeric-array":
        return make_pipeline(StandardScaler(), Ridge()).fit(rows[NUMBERS].to_numpy(dtype=np.float64), spend)
    columns = ColumnTransformer(
        [("numbers", StandardScaler(), NUMBERS), ("strings", OneHotEncoder(), STRINGS)],
        remainder="passthrough",  # autopay goes through as 0/1
    )
    return make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(rows, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default=MODELS[0], help="which model (default onehot)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the files go (default: this folder)")
    parser.add_argument("--rows", type=int, default=TRAIN_ROWS, help=f"training rows (default {TRAIN_ROWS})")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    rows = make_rows(args.rows, rng)
    model = fit(args.model, rows, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / ("churn.joblib" if args.model == MODELS[0] else f"churn-{args.model}.joblib")
    joblib.dump(model, model_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    model_path.with_name(model_path.name + ".sha256").write_text(f"{digest}  {model_path.name}\n")
    make_rows(SAMPLE_ROWS, rng).to_csv(args.out / "rows.csv", index=False)
    print(f"model: {model_path}\nsha256: {digest}\nsample rows: {args.out / 'rows.csv'}")


if __name__ == "__main__":
    main()
