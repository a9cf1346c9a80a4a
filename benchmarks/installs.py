"""The Python tools' installs: virtualenvs of the interpreter the images run.

storage-init's image (`Dockerfile.distroless`) runs Debian 12's ``python3``;
KServe's storage initializer runs on the official ``python:*-slim`` images. Both
interpreters are built with profile-guided and link-time optimisation; a
development interpreter need not be, and the difference shows in start-up and in
per-file Python (`benchmarks/FINDINGS.md` has the figures). So the harness
runs every Python tool as it ships: storage-init installed from a wheel of the
checkout and started as the image starts it (``python -I -B -m storage_init``),
each peer from PyPI, all in virtualenvs of Debian's ``python3`` where it is
installed (the image's own interpreter), else of the interpreter running the
harness.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench"
PEERS = WORK / "peers"

#: Debian's interpreter: the distroless runtime image's, byte for byte the same build.
DEBIAN_PYTHON = Path("/usr/bin/python3")

#: Peers installed in virtualenvs of their own: name -> pip requirement.
PEER_REQUIREMENTS = {
    "kserve": "kserve-storage==0.21.0",
    "boto3": "boto3",
    "boto3crt": "boto3[crt]",
    "plot": "matplotlib",
}


#: Run by the candidate interpreter: True if it can be the image's.
_PROBE = "import ensurepip, sys; print(sys.version_info >= (3, 11))"


@functools.cache
def image_python() -> str:
    """Debian's ``python3`` if it can make virtualenvs here, else this interpreter."""
    if DEBIAN_PYTHON.exists():
        probe = subprocess.run(
            [str(DEBIAN_PYTHON), "-c", _PROBE],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return str(DEBIAN_PYTHON)
    print(
        f"{DEBIAN_PYTHON} (3.11+, with venv) not found: the Python tools run on "
        f"{sys.executable}, which may be slower than the images' interpreters",
        file=sys.stderr,
    )
    return sys.executable


def _venv(name: str) -> Path:
    """The python of virtualenv `name` under `PEERS`, made by `image_python` if new."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    home = str(Path(image_python()).parent)
    config = venv / "pyvenv.cfg"
    if config.exists() and f"home = {home}\n" not in config.read_text():
        shutil.rmtree(venv)  # made by another interpreter (an older harness)
    if not python.exists():
        subprocess.run([image_python(), "-m", "venv", str(venv)], check=True)
    return python


def _pip(
    python: Path, command: str, *args: str, env: dict[str, str] | None = None
) -> None:
    quiet = ["-q", "--disable-pip-version-check"]
    subprocess.run(
        [str(python), "-m", "pip", command, *quiet, *args], env=env, check=True
    )


@functools.cache
def peer_python(name: str) -> str:
    """The python of a peer's own virtualenv, made and installed on first use."""
    python = _venv(name)
    marker = python.parent.parent / ".installed"
    if not marker.exists():
        _pip(python, "install", PEER_REQUIREMENTS[name])
        marker.touch()
    return str(python)


def storage_init_argv() -> list[str]:
    """How to start storage-init as the image does (`_install_storage_init`)."""
    return _install_storage_init()[0]


def storage_init_commit() -> str:
    """The commit installed (``git describe --always --dirty`` when it was built)."""
    return _install_storage_init()[1]


@functools.cache
def _install_storage_init() -> tuple[list[str], str]:
    """Install the checkout afresh; its argv and commit.

    Built once per harness process (the checkout as it is then, kernels required,
    as the Dockerfile builds it), so a run measures the code it started with even
    if the tree changes meanwhile, and reports that code's commit.
    """
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    python = _venv("storage-init")
    env = {**os.environ, "STORAGE_INIT_NATIVE": "require"}
    with tempfile.TemporaryDirectory() as wheels:
        _pip(python, "wheel", "--no-deps", "-w", wheels, str(ROOT), env=env)
        (wheel,) = Path(wheels).glob("storage_init-*.whl")
        # The same version number every time: only a forced reinstall replaces it;
        # then the extras' dependencies, installed only when missing.
        _pip(python, "install", "--force-reinstall", "--no-deps", str(wheel))
        _pip(python, "install", f"{wheel}[all]")
    return [str(python), "-I", "-B", "-m", "storage_init"], commit or "unknown"
