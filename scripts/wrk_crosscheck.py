"""Second opinion: the harness's closed-loop figures against wrk's, on the same server, cores and concurrency.

    .venv/bin/python scripts/wrk_crosscheck.py --framework flask --server gunicorn-sync \
        --model synthetic:sleep_ms=10 --concurrency 1 --duration 10

The server runs on the server cores; Locust (through the harness's own ``run_load``) and then wrk run on the load
cores, one after the other, against the same warm server. Prints p50 and throughput from both, and the server-side
predict p50 from ``Server-Timing``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from servingbench.harness.cpus import detect_cpus
from servingbench.harness.loadgen import run_load
from servingbench.harness.processes import free_port, pinned_argv, running_server
from servingbench.loadtests import LoadSpec
from servingbench.servers import ServerConfig, launch_command

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read a wrk duration: {text!r}")
    return float(match[1]) * _UNITS_MS[match[2]]


def parse_wrk(output: str) -> dict[str, float]:
    """p50 (ms), p99 (ms) and requests/s from ``wrk --latency`` output."""
    p50 = re.search(r"^\s+50%\s+(\S+)$", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)$", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (p50 and p99 and rps):
        raise ValueError("unexpected wrk output:\n" + output)
    return {"p50_ms": _ms(p50[1]), "p99_ms": _ms(p99[1]), "rps": float(rps[1])}


def _payload(base_url: str) -> bytes:
    with urllib.request.urlopen(base_url + "/model", timeout=5) as response:
        n_features = json.load(response)["n_features"]
    return json.dumps({"features": [0.1 * i for i in range(n_features)]}).encode()


def run_wrk(url: str, body: bytes, *, concurrency: int, duration_s: int, cpus: tuple[int, ...], work: Path) -> str:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(body.decode())))
    argv = [shutil.which("wrk") or "wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency"]
    argv += ["-s", str(script), url]
    done = subprocess.run(pinned_argv(argv, cpus), capture_output=True, text=True, timeout=duration_s + 30, check=True)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", default="flask", choices=("fastapi", "flask"))
    parser.add_argument("--server", default="gunicorn-sync")
    parser.add_argument("--route", default="def", choices=("def", "async"))
    parser.add_argument("--model", default="synthetic:sleep_ms=10")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10, help="measured seconds for each tool")
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    cpus = detect_cpus()
    config = ServerConfig(args.framework, args.server, route=args.route)  # type: ignore[arg-type]
    port = free_port()
    command = launch_command(config, host="127.0.0.1", port=port, model=args.model)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            command.argv, command.env, port=port, log_path=Path(tmp) / "server.log", cpus=cpus.server
        ) as server,
    ):
        body = _payload(server.base_url)
        spec = LoadSpec(
            base_url=server.base_url,
            endpoint="/predict",
            payload=body,
            kind="closed",
            users=args.concurrency,
            warmup_s=args.warmup,
            duration_s=args.duration,
            seed=1,
        )
        ours = run_load(spec, out_dir=Path(tmp) / "locust", cpus=cpus.load)
        wrk = parse_wrk(
            run_wrk(
                server.base_url + "/predict",
                body,
                concurrency=args.concurrency,
                duration_s=args.duration,
                cpus=cpus.load,
                work=Path(tmp),
            )
        )
    total, predict = ours.histograms.total, ours.histograms.predict
    harness = {"p50_ms": total.get_value_at_percentile(50) / 1000, "p99_ms": total.get_value_at_percentile(99) / 1000}
    print(f"config {config.label()} model {args.model} concurrency {args.concurrency}, {args.duration} s each")
    print(
        f"  harness (Locust + HDR): p50 {harness['p50_ms']:.3f} ms  p99 {harness['p99_ms']:.3f} ms"
        f"  {ours.rps:.1f} req/s"
        f"  (generator CPU {ours.generator_cpu_pct:.0f}%)"
    )
    print(f"  wrk --latency:          p50 {wrk['p50_ms']:.3f} ms  p99 {wrk['p99_ms']:.3f} ms  {wrk['rps']:.1f} req/s")
    print(f"  server predict p50 (Server-Timing): {predict.get_value_at_percentile(50) / 1000:.3f} ms")
    print(f"  p50 difference {harness['p50_ms'] - wrk['p50_ms']:+.3f} ms; throughput ratio {ours.rps / wrk['rps']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
