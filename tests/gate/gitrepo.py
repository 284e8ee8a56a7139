"""A throwaway git repository with one commit, for the base-environment and end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
GIT_IDENTITY = ("-c", "user.name=servingbench tests", "-c", "user.email=tests@example.invalid")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *GIT_IDENTITY, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit_files(repo: Path, files: Mapping[str, str], copies: Mapping[str, Path] | None = None) -> str:
    """Write ``files`` (path: text) and copy ``copies`` (path: file or directory) into ``repo`` (created on first
    use), commit everything, return the commit id."""
    if not (repo / ".git").exists():
        repo.mkdir(parents=True, exist_ok=True)
        git(repo, "init", "-q")
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    for name, source in (copies or {}).items():
        target = repo / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "test commit")
    return git(repo, "rev-parse", "HEAD")
