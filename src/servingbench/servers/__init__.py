"""Thin framework adapters over the predict core, the registry of stacks, and how each server kind is launched."""

from __future__ import annotations

from servingbench.servers.launch import (
    LaunchCommand,
    ServerConfig,
    default_server,
    launch_command,
    server_versions,
)
from servingbench.servers.registry import FRAMEWORKS, SERVERS, Framework, ServerKind, servers_for

__all__ = [
    "FRAMEWORKS",
    "SERVERS",
    "Framework",
    "LaunchCommand",
    "ServerConfig",
    "ServerKind",
    "default_server",
    "launch_command",
    "server_versions",
    "servers_for",
]
