"""A training job as a team would write it: a DataFrame pipeline with string categories, saved with joblib.

    .venv/bin/python examples/own-model/train.py [--out DIR] [--rows N]

Generates a churn-like table (age, tenure_months, monthly_spend, plan, region, autopay), fits a ColumnTransformer
(scaled numbers, one-hot strings) with a logistic regression, and writes to ``--out`` (default: this folder):

- ``churn.joblib``: the model, the usual artefact of a training job;
- ``churn.joblib.sha256``: its sha256, recorded where the file was made (import-model asks for it);
- ``rows.csv``: a few hundred rows of the same shape, standing in for real traffic.

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
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).resolve().parent
SEED = 7
TRAIN_ROWS = 5000
SAMPLE_ROWS = 500
PLANS = ("basic", "plus", "family", "business")
REGIONS = ("north", "south", "east", "west", "capital")


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


def build() -> object:
    numbers = ["age", "tenure_months", "monthly_spend"]
    columns = ColumnTransformer(
        [("numbers", StandardScaler(), numbers), ("strings", OneHotEncoder(), ["plan", "region"])],
        remainder="passthrough",  # autopay goes through as 0/1
    )
    return make_pipeline(columns, LogisticRegression(max_iter=1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where the files go (default: this folder)")
    parser.add_argument("--rows", type=int, default=TRAIN_ROWS, help=f"training rows (default {TRAIN_ROWS})")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    rows = make_rows(args.rows, rng)
    model = build().fit(rows, churned(rows, rng))  # type: ignore[attr-defined]
    args.out.mkdir(parents=True, exist_ok=True)
    model_path = args.out / "churn.joblib"
    joblib.dump(model, model_path)
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    (args.out / "churn.joblib.sha256").write_text(f"{digest}  churn.joblib\n")
    make_rows(SAMPLE_ROWS, rng).to_csv(args.out / "rows.csv", index=False)
    print(f"model: {model_path}\nsha256: {digest}\nsample rows: {args.out / 'rows.csv'}")


if __name__ == "__main__":
    main()
