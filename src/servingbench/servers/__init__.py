"""Thin FastAPI and Flask adapters over the predict core, and how to launch them under each server kind."""

from __future__ import annotations

from servingbench.servers.launch import (
    FRAMEWORK_SERVERS,
    LaunchCommand,
    ServerConfig,
    ServerKind,
    launch_command,
    server_versions,
)

__all__ = ["FRAMEWORK_SERVERS", "LaunchCommand", "ServerConfig", "ServerKind", "launch_command", "server_versions"]
