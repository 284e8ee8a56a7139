"""``servingbench train`` (the bundled models) and ``servingbench import-model`` (your own)."""

from __future__ import annotations

import argparse
from pathlib import Path

from servingbench.commands import EXIT_OK, EXIT_STATUS_TEXT, Subparsers, fail, parser_options

__all__ = ["add_import_model", "add_train"]

TRAIN_DESCRIPTION = """\
Train the bundled models (fast: a linear model, heavy: a forest) into the models directory, as skops files with
their manifests. servingbench run and serve train them on first use; this does it ahead of time."""
TRAIN_EPILOG = f"""\
examples:
  servingbench train
  servingbench train --models-dir /srv/models --force

{EXIT_STATUS_TEXT}"""
IMPORT_DESCRIPTION = """\
Import your model file (.joblib, .pkl, .skops) for the benchmark: the sha256 is checked on the bytes, a pickle's
imports are inspected before anything is unpickled (a type outside scikit-learn, numpy and scipy is refused unless
named with --trust), and the model is re-saved as .skops with a manifest: its input schema (feature names, and for a
DataFrame model each column's kind and categories), its output, and sample rows for the load (from --sample, or
drawn from what the model records). The last line printed is the imported file's path."""
IMPORT_EPILOG = f"""\
examples:
  servingbench import-model model.joblib --sha256 HEX --sample rows.csv
  servingbench import-model clf.joblib --sha256 HEX --output predict_proba --name churn
  servingbench import-model pipe.skops --trust mypkg.features.Cleaner
  servingbench run --model "$(servingbench import-model model.joblib --sha256 HEX | tail -1)"

{EXIT_STATUS_TEXT}"""


def add_train(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train the bundled models (fast, heavy) into the models directory",
        **parser_options(TRAIN_DESCRIPTION, TRAIN_EPILOG),
    )
    p.add_argument(
        "--models-dir", type=Path, default=None, help="where to write (default: $SERVINGBENCH_MODELS_DIR or ./models)"
    )
    p.add_argument("--force", action="store_true", help="retrain even if the files exist")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from servingbench.shared_model.models import default_models_dir, train_default_models

    for path in train_default_models(args.models_dir or default_models_dir(), force=args.force):
        print(path)
    return EXIT_OK


def add_import_model(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from servingbench.shared_model.columns import OUTPUT_METHODS
    from servingbench.shared_model.samples import DEFAULT_SAMPLE_ROWS, MAX_SAMPLE_ROWS

    p = sub.add_parser(
        "import-model",
        help="import your model file (.joblib, .pkl, .skops) as a verified .skops with its manifest",
        **parser_options(IMPORT_DESCRIPTION, IMPORT_EPILOG),
    )
    p.add_argument("path", type=Path, help="the model file: .joblib, .pkl, .pickle or .skops")
    p.add_argument("--sha256", default=None, help="the file's sha256 (required for .joblib/.pkl: checked first)")
    p.add_argument(
        "--sample", type=Path, default=None, help="CSV or Parquet file of real input rows for the load (default: none)"
    )
    p.add_argument(
        "--sample-rows",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        help=f"rows kept from --sample or drawn from the model (at most {MAX_SAMPLE_ROWS})",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="TYPE",
        help="allow a type outside scikit-learn, numpy and scipy, e.g. mypkg.features.Cleaner (repeatable)",
    )
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--output", choices=OUTPUT_METHODS, default="predict", help="what a request answers")
    p.add_argument(
        "--models-dir", type=Path, default=None, help="where to write (default: $SERVINGBENCH_MODELS_DIR or ./models)"
    )
    p.set_defaults(func=_import_model)


def _import_model(args: argparse.Namespace) -> int:
    from servingbench.shared_model import ModelError
    from servingbench.shared_model.importer import import_model
    from servingbench.shared_model.models import default_models_dir
    from servingbench.shared_model.samples import MAX_SAMPLE_ROWS

    if not 1 <= args.sample_rows <= MAX_SAMPLE_ROWS:
        return fail(f"--sample-rows must be 1..{MAX_SAMPLE_ROWS}, got {args.sample_rows}")
    try:
        result = import_model(
            args.path,
            models_dir=args.models_dir or default_models_dir(),
            sha256=args.sha256,
            sample=args.sample,
            trust=args.trust,
            name=args.name,
            output=args.output,
            max_rows=args.sample_rows,
        )
    except ModelError as err:
        return fail(str(err))
    for note in result.notes:
        print(f"servingbench: {note}")
    print(result.path)
    return EXIT_OK
