"""The benchmark harness: the run plan, CPU allocation, server processes, the runner and the results bundle.

``run_benchmark`` is what ``servingbench run`` calls; the rest is public for tests and for tools that want
one piece (``running_server`` starts and always reaps a server; ``load_plan`` checks a plan file).
"""

from __future__ import annotations

from servingbench.files import write_atomic
from servingbench.harness.bundle import RESULTS_FORMAT, RESULTS_VERSION, SUMMARY_COLUMNS, BundleWriter, summary_csv
from servingbench.harness.cpus import CpuAllocation, CpuAllocationError, allocate_cpus, detect_cpus
from servingbench.harness.environment import collect_environment
from servingbench.harness.measure import GENERATOR_SATURATION_PCT, RemoteLoad
from servingbench.harness.plan import PRESET_NAMES, Plan, PlanError, estimate_seconds, load_plan, parse_plan
from servingbench.harness.processes import ServerProcess, ServerStartError, free_port, running_server
from servingbench.harness.resources import ServerMonitor
from servingbench.harness.runner import BenchmarkInterrupted, HarnessError, config_order, run_benchmark

__all__ = [
    "GENERATOR_SATURATION_PCT",
    "PRESET_NAMES",
    "RESULTS_FORMAT",
    "RESULTS_VERSION",
    "SUMMARY_COLUMNS",
    "BenchmarkInterrupted",
    "BundleWriter",
    "CpuAllocation",
    "CpuAllocationError",
    "HarnessError",
    "Plan",
    "PlanError",
    "RemoteLoad",
    "ServerMonitor",
    "ServerProcess",
    "ServerStartError",
    "allocate_cpus",
    "collect_environment",
    "config_order",
    "detect_cpus",
    "estimate_seconds",
    "free_port",
    "load_plan",
    "parse_plan",
    "run_benchmark",
    "running_server",
    "summary_csv",
    "write_atomic",
]
