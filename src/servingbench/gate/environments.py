"""The base commit's environment on this machine, beside the head's: its source and an interpreter that serves it.

``prepare_base(repo, ref, cache)``:

1. resolves ``ref`` to a commit and exports that commit's tree (``git archive``) into ``<cache>/sources/<commit>``.
   An export, not a ``git worktree``: a worktree's bookkeeping lives in the repository's ``.git``, which a CI cache
   restore into a fresh checkout does not bring back; an export depends on nothing but itself;
2. finds an interpreter whose packages are exactly the base's ``requirements.lock``: this one when every pin of
   the base's lock is installed here at that version (the common case: the change did not touch the lock), else a
   virtual environment built from the base's lock in ``<cache>/venvs/<lock hash>-py<X.Y>`` (cached by lock hash and
   Python version, built in a temporary directory and renamed into place, so a half-built one is never used);
3. writes a launcher, ``<cache>/launchers/<commit>-<lock key>``: a shell script that runs that interpreter with the
   base's ``src`` first on ``PYTHONPATH``, so ``import servingbench`` in the base's servers is the base's code, in
   place, as an editable install would give it.

``prepare_head(repo, cache, lock_key)`` gives the head the same shape: its ``src`` (uncommitted changes included) is
copied to ``<cache>/current/<digest of its content>/src`` and served by a launcher of the same form. Both arms then
start the same way (a shell script that sets ``PYTHONPATH`` to a path of the same length and execs the same kind of
interpreter), so nothing in how a server is started differs between base and head but the code it serves (A/A
trials with the head served from the checkout instead measured it cheaper in 15 of 20: docs/bench-ci.md).

The cache directory (``--cache``, ``$SERVINGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/servingbench`` or
``~/.cache/servingbench``) is what CI should cache. Old exports and environments are pruned (most recently used
kept). Building is serialised by a lock file, so two checks on one machine never build the same thing at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CACHE_ENV_VAR",
    "BaseBuildError",
    "BaseEnvironment",
    "RefError",
    "default_cache_dir",
    "lock_key",
    "lock_mismatches",
    "lock_pins",
    "map_model_spec",
    "prepare_base",
    "prepare_head",
    "repo_root",
    "resolve_commit",
]

CACHE_ENV_VAR = "SERVINGBENCH_CACHE_DIR"
LOCK_FILE = "requirements.lock"
SOURCE_SUBDIR = "src"  # the package lives in src/ (src layout), which goes on PYTHONPATH
GIT_TIMEOUT_S = 120.0
VENV_BUILD_TIMEOUT_S = 1800.0  # a cold pip install of the whole lock on a slow runner
KEEP_SOURCES = 8  # most recently used commit exports kept in the cache
KEEP_VENVS = 3  # most recently used lock environments kept
KEEP_HEADS = 4  # most recently used snapshots of the head's src kept
HEADS_SUBDIR = "current"  # head snapshots: as long a name as "sources", so both arms' paths have one length
HASH_CHARS = 16
LOG_TAIL_CHARS = 2000
# A pinned line of a lock file: name, optional extras, ==version, optional environment marker.
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;#]+)\s*(;[^#]*)?")


class RefError(ValueError):
    """The ref or the repository is unusable (a usage error, exit 2). ``str(err)`` is one line."""


class BaseBuildError(Exception):
    """The base environment could not be built (no verdict, exit 3). ``str(err)`` is one line."""


@dataclass(frozen=True)
class BaseEnvironment:
    """The base commit ready to serve: its exported ``source`` tree, the interpreter that has its locked packages
    (``venv`` is ``None`` when that is this interpreter) and the ``launcher`` that runs it on the base's code."""

    ref: str
    commit: str
    source: Path
    python: Path
    venv: Path | None
    launcher: Path
    lock_key: str
    built: tuple[str, ...]

    @property
    def cache(self) -> Path:
        """The cache directory the environment lives in (``source`` is ``<cache>/sources/<commit>``)."""
        return self.source.parent.parent

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "commit": self.commit,
            "source": str(self.source),
            "python": str(self.python),
            "venv": None if self.venv is None else str(self.venv),
            "launcher": str(self.launcher),
            "lock_key": self.lock_key,
            "built": list(self.built),
        }


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$SERVINGBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/servingbench``, else ``~/.cache/servingbench``."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV_VAR):
        return Path(env[CACHE_ENV_VAR]).expanduser()
    root = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return root / "servingbench"


# --- git ------------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RefError(f"git {' '.join(args)} failed: {exc}") from exc
    if done.returncode != 0:
        raise RefError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git {args[0]} failed")
    return done.stdout.strip()


def repo_root(start: Path) -> Path:
    """The top of the git checkout holding ``start``; :class:`RefError` outside one."""
    try:
        return Path(_git(start, "rev-parse", "--show-toplevel"))
    except RefError as exc:
        raise RefError(f"{start} is not inside a git checkout ({exc}): --base needs one") from exc


def resolve_commit(repo: Path, ref: str) -> str:
    """The full commit id ``ref`` names in ``repo``; :class:`RefError` (with what to do) when it names none."""
    if not ref or ref.startswith("-"):
        raise RefError(f"--base {ref!r} is not a git ref")
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RefError as exc:
        raise RefError(
            f"--base {ref!r} names no commit in {repo}: fetch it first (git fetch origin {ref}; "
            "in GitHub Actions check out with fetch-depth: 0)"
        ) from exc


# --- the lock ---------------------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """A distribution name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> dict[str, tuple[str, str | None]]:
    """``{normalised name: (version, marker or None)}`` of every ``name==version`` line of a lock file."""
    pins: dict[str, tuple[str, str | None]] = {}
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match:
            marker = match.group(4)
            pins[_normalise(match.group(1))] = (match.group(3), marker[1:].strip() if marker else None)
    return pins


def _marker_applies(marker: str | None) -> bool:
    if marker is None:
        return True
    from packaging.markers import InvalidMarker, Marker  # a dependency of matplotlib: always installed

    try:
        return bool(Marker(marker).evaluate())
    except InvalidMarker:
        return True  # unreadable: count the pin, which can only make the check stricter


def lock_mismatches(pins: Mapping[str, tuple[str, str | None]], installed: Mapping[str, str]) -> list[str]:
    """The pins (that apply on this platform) not installed at exactly their version, as "name==x (found y)"."""
    return [
        f"{name}=={version} (found {installed.get(name, 'none')})"
        for name, (version, marker) in sorted(pins.items())
        if _marker_applies(marker) and installed.get(name) != version
    ]


def _installed_here() -> dict[str, str]:
    return {
        _normalise(dist.metadata["Name"]): dist.version for dist in metadata.distributions() if dist.metadata["Name"]
    }


def lock_key(lock: bytes, python_version: tuple[int, int] | None = None) -> str:
    """The cache key of an environment built from ``lock`` for this Python: sha256 prefix and ``py<major>.<minor>``."""
    major, minor = python_version or sys.version_info[:2]
    return f"{hashlib.sha256(lock).hexdigest()[:HASH_CHARS]}-py{major}.{minor}"


# --- building -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(argv: list[str], *, timeout_s: float, log: Path) -> None:
    """Run ``argv`` in its own process group with output to ``log``; stop the whole group on timeout or Ctrl-C."""
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise BaseBuildError(f"{shlex.join(argv[:4])} ... took over {timeout_s:g} s; log: {log}") from exc
            raise
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:].strip().splitlines()
        raise BaseBuildError(f"{shlex.join(argv[:4])} ... exited {code}: {tail[-1] if tail else ''} (log: {log})")


def _publish(build: Callable[[Path], None], target: Path) -> bool:
    """Build ``target`` in a temporary sibling and rename it into place; False when it was already there."""
    if target.is_dir():
        os.utime(target)  # most recently used: pruning keeps it
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(scratch)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return True


def _export(repo: Path, commit: str) -> Callable[[Path], None]:
    def build(scratch: Path) -> None:
        # To a file first: reading git's stream with tarfile stops at the end-of-archive marker, before git has
        # written its padding, and git then dies of SIGPIPE.
        archive_path = scratch.with_name(scratch.name + ".tar")
        try:
            _git(repo, "archive", "--format=tar", "-o", str(archive_path), commit)
            with tarfile.open(archive_path) as archive:
                archive.extractall(scratch, filter="data")
        except RefError as exc:
            raise BaseBuildError(f"git archive {commit[:12]} failed: {exc}") from exc
        finally:
            archive_path.unlink(missing_ok=True)

    return build


def _venv(lock: Path, log: Path) -> Callable[[Path], None]:
    def build(scratch: Path) -> None:
        _run([sys.executable, "-m", "venv", str(scratch)], timeout_s=GIT_TIMEOUT_S, log=log)
        pip = [str(scratch / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        _run([*pip, "-r", str(lock)], timeout_s=VENV_BUILD_TIMEOUT_S, log=log)

    return build


def _launcher(path: Path, python: Path, source: Path) -> None:
    """A shell script that runs ``python`` on ``source``'s code (its src first on PYTHONPATH, nothing else there)."""
    script = (
        "#!/bin/sh\n"
        "# servingbench: serve this tree's code in a check. Written by servingbench.gate.environments.\n"
        f"PYTHONPATH={shlex.quote(str(source / SOURCE_SUBDIR))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(str(python))} "$@"\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(script, encoding="utf-8")
    scratch.chmod(0o755)
    scratch.replace(path)


def _prune(directory: Path, keep: int, current: Path) -> None:
    """Remove all but the ``keep`` most recently used entries of ``directory`` (never ``current``)."""
    if not directory.is_dir():
        return
    entries = sorted(
        (entry for entry in directory.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for entry in entries[keep:]:
        if entry != current:
            shutil.rmtree(entry, ignore_errors=True)


def _prune_launchers(cache: Path) -> None:
    """Remove the launchers whose tree (``sources/<commit>`` or ``current/<digest>``) was pruned."""
    launchers = cache / "launchers"
    if not launchers.is_dir():
        return
    for launcher in launchers.iterdir():
        name = launcher.name.split("-", 1)[0]
        if (
            launcher.is_file()
            and not name.startswith(".")
            and not any((cache / kind / name).is_dir() for kind in ("sources", HEADS_SUBDIR))
        ):
            launcher.unlink(missing_ok=True)


def prepare_base(repo: Path, ref: str, cache: Path, *, say: Callable[[str], None] = lambda _: None) -> BaseEnvironment:
    """The base commit ``ref`` of ``repo`` ready to serve (see the module docstring); cached under ``cache``.

    Raises :class:`RefError` when ``ref`` names no commit, :class:`BaseBuildError` when the export or the
    environment cannot be built.
    """
    commit = resolve_commit(repo, ref)
    with _locked(cache):
        source = cache / "sources" / commit
        built = ["source"] if _publish(_export(repo, commit), source) else []
        lock_path = source / LOCK_FILE
        if not lock_path.is_file():
            raise BaseBuildError(f"the base commit {commit[:12]} has no {LOCK_FILE}: it predates locked environments")
        key = lock_key(lock_path.read_bytes())
        missing = lock_mismatches(lock_pins(lock_path.read_text(encoding="utf-8")), _installed_here())
        venv: Path | None = None
        python = Path(sys.executable)
        if missing:
            venv = cache / "venvs" / key
            say(f"base {commit[:12]}: its lock differs from this environment ({missing[0]}, ...): environment {venv}")
            if _publish(_venv(lock_path, cache / f"build-{key}.log"), venv):
                built.append("venv")
            python = venv / "bin" / "python"
        launcher = cache / "launchers" / f"{commit}-{key}"
        _launcher(launcher, python, source)
        _prune(cache / "sources", KEEP_SOURCES, source)
        _prune(cache / "venvs", KEEP_VENVS, venv or cache)
        _prune_launchers(cache)
    return BaseEnvironment(ref, commit, source, python, venv, launcher, key, tuple(built))


def _head_digest(src: Path) -> str:
    """A 40-hex digest of ``src``'s files (paths and contents; bytecode caches left out): a commit's length."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(src.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _copy_src(src: Path) -> Callable[[Path], None]:
    def build(scratch: Path) -> None:
        shutil.copytree(src, scratch / SOURCE_SUBDIR, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    return build


def prepare_head(repo: Path, cache: Path, key: str) -> Path:
    """A launcher that serves a snapshot of ``repo``'s ``src`` (as it is now, uncommitted changes included) with
    this interpreter, in the same form as the base's (see the module docstring); ``key`` names it like the base's
    launcher (pass the base's lock key), so the two launchers' paths have one length too."""
    src = repo / SOURCE_SUBDIR
    if not src.is_dir():
        raise BaseBuildError(f"{repo} has no {SOURCE_SUBDIR}/ to serve the head from")
    digest = _head_digest(src)
    with _locked(cache):
        snapshot = cache / HEADS_SUBDIR / digest
        _publish(_copy_src(src), snapshot)
        launcher = cache / "launchers" / f"{digest}-{key}"
        _launcher(launcher, Path(sys.executable), snapshot)
        _prune(cache / HEADS_SUBDIR, KEEP_HEADS, snapshot)
        _prune_launchers(cache)
    return launcher


def map_model_spec(spec: str, head_root: Path, base_root: Path) -> str:
    """The base's version of a plan's model spec: a model file inside the head checkout maps to the same path in the
    base's tree when the base has it; anything else (a bundled or synthetic model, a file outside the checkout, a
    file the base lacks) is served as it is."""
    path = Path(spec)
    if not path.is_absolute():
        return spec
    try:
        relative = path.resolve().relative_to(head_root.resolve())
    except ValueError:
        return spec
    mapped = base_root / relative
    return str(mapped) if mapped.is_file() else spec
