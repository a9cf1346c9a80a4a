"""Build hook: compile the package's kernels into storage_init/_kernels.so.

The sources are ``_md5x16.c`` (MD5 of 16 messages at once, for multipart ETags),
``_crcfold.c`` (CRC-64/NVME, CRC-32C, CRC-32 by carry-less multiplication) and
``_recvfile.c`` (the receive loop of a plain-TCP body: socket, file, CRC). The
library links against nothing and needs no Python headers; storage-init loads it
with ctypes, so one build serves every Python version and the wheel is tagged
``py3-none-<platform>``. Without a C compiler the wheel stays pure Python:
multipart ETags are hashed with hashlib (2-6x the CPU time with SSE2 or AVX2,
12x with AVX-512: benchmarks/kernels.py), CRCs come from awscrt and zlib, and
bodies are received by Python's loop.

Environment:
    CC: the compiler (default: Python's own, else ``cc``).
    STORAGE_INIT_NATIVE: ``require`` fails the build if the library does not
        compile (the container image sets it); ``skip`` does not try.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = (
    "storage_init/_abi.c",
    "storage_init/_md5x16.c",
    "storage_init/_crcfold.c",
    "storage_init/_recvfile.c",
)
LIBRARY = "storage_init/_kernels.so"
FLAGS = ["-O3", "-fPIC", "-shared", "-nostdlib", "-s", "-Wall", "-Wno-psabi"]


def compile_library(root: Path, output: Path) -> str | None:
    """Compile the library; return why it failed, or None."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    # libgcc provides the CPU detection behind the MD5 kernel's ifunc; clang builds
    # (one variant, for the compiler's flags) do not need it.
    cmd = [*cc, *FLAGS, "-o", str(output), *(str(root / s) for s in SOURCES)]
    for extra in (["-lgcc"], []):
        try:
            done = subprocess.run(
                cmd + extra, capture_output=True, text=True, check=False
            )
        except OSError as exc:
            return f"{cc[0]}: {exc.strerror}"
        if done.returncode == 0:
            return None
    return done.stderr.strip().splitlines()[-1] if done.stderr else "failed"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile the library for wheel and editable builds."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile the library and tag the wheel for this platform, if it builds."""
        if self.target_name != "wheel":
            return
        mode = os.environ.get("STORAGE_INIT_NATIVE", "auto")
        if mode == "skip":
            return
        root = Path(self.root)
        if version == "editable":
            # The package runs from the source tree: the library goes beside it.
            output = root / LIBRARY
        else:
            # A wheel takes it from a scratch directory: building one never
            # replaces the library an editable install in this tree is using.
            self._scratch = tempfile.TemporaryDirectory(prefix="storage-init-build-")
            output = Path(self._scratch.name, Path(LIBRARY).name)
        error = compile_library(root, output)
        if error is not None:
            if mode == "require":
                msg = f"cannot compile {LIBRARY}: {error}"
                raise RuntimeError(msg)
            print(
                f"storage-init: {LIBRARY} not compiled ({error}); "
                "MD5s and CRCs will come from hashlib, awscrt and zlib",
                file=sys.stderr,
            )
            return
        build_data["pure_python"] = False
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["tag"] = f"py3-none-{platform}"
        if version == "editable":
            build_data["artifacts"].append(LIBRARY)
        else:
            build_data["force_include"][str(output)] = LIBRARY

    def finalize(
        self, version: str, build_data: dict[str, Any], artifact_path: str
    ) -> None:
        """Remove the scratch directory of a wheel build."""
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch.cleanup()
