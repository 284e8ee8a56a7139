"""``servingbench serve``: one framework under one production server, in the foreground."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from servingbench.commands import EXIT_OK, EXIT_STATUS_TEXT, Subparsers, fail, parser_options

__all__ = ["add"]

DESCRIPTION = """\
Serve a model with one framework under one production server, in the foreground, exactly as the benchmark starts it
(the command line and the package versions are printed first). The model is loaded and verified before the server
binds its port: a bad model file stops here with one line."""
EPILOG = f"""\
examples:
  servingbench serve fastapi                                   FastAPI on uvicorn, the fast model, 127.0.0.1:8000
  servingbench serve flask --server gunicorn-gthread --threads 40
  servingbench serve fastapi --route async --model heavy
  servingbench serve litestar --server granian --model models/churn.skops
  servingbench serve flask --model model.joblib --allow-pickle --pickle-sha256 HEX

{EXIT_STATUS_TEXT}"""


def add(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from servingbench.servers.registry import FRAMEWORKS, SERVERS

    p = sub.add_parser(
        "serve",
        help="run one framework under a production server, in the foreground",
        **parser_options(DESCRIPTION, EPILOG),
    )
    p.add_argument("framework", choices=tuple(FRAMEWORKS), help="the framework (or floor, or idiomatic variant)")
    p.add_argument(
        "--server", choices=tuple(SERVERS), default=None, help="the server kind (default: the framework's first)"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per worker, for a server with a thread knob (default 40)"
    )
    p.add_argument("--route", default=None, help="route style, where the framework has one (FastAPI: def or async)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--model", default="fast", help="fast | heavy | PATH | synthetic:cpu_us=N | synthetic:sleep_ms=N")
    p.add_argument("--models-dir", type=Path, default=None, help="where the default models live (default: ./models)")
    p.add_argument("--blas-threads", type=int, default=1, help="BLAS/OpenMP threads per worker")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickle/joblib model (needs --pickle-sha256)")
    p.add_argument("--pickle-sha256", default=None, help="the sha256 a pickle/joblib model file must have")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from servingbench.servers.launch import ServerConfig, default_server, launch_command, server_versions
    from servingbench.shared_model import ModelError, PredictService, Settings, SettingsError

    server = args.server or default_server(args.framework)
    try:
        config = ServerConfig(args.framework, server, args.workers, args.threads, args.route)
        models_dir = str((args.models_dir or Settings().resolved_models_dir()).resolve())
        settings = Settings(
            model=args.model,
            models_dir=models_dir,
            blas_threads=args.blas_threads,
            route=config.route_style,
            allow_pickle=args.allow_pickle,
            pickle_sha256=args.pickle_sha256,
        )
        # Load (and verify) the model here first, so a bad model stops us before any server binds a port.
        core = PredictService.from_settings(settings)
    except (ValueError, ModelError, SettingsError) as err:
        return fail(str(err))
    command = launch_command(config, host=args.host, port=args.port, model=args.model, settings=settings)
    versions = " ".join(f"{k}={v}" for k, v in server_versions().items())
    print(f"servingbench: serving {core.info.name} ({core.info.sha256[:12]}) with {config.label()}", flush=True)
    print(f"servingbench: versions: {versions}", flush=True)
    print(f"servingbench: exec: {command.shell()}", flush=True)
    # exec: the server's own master then owns the workers and stops every one on SIGINT/SIGTERM.
    os.execve(command.argv[0], command.argv, command.env)
    return EXIT_OK  # pragma: no cover - execve does not return
