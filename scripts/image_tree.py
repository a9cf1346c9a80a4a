"""Build and strip the file tree that the storage-init image ships.

One implementation for two users: ``Dockerfile.distroless`` runs ``strip`` on the
virtualenv of its build stage, and the staged-tree test and the footprint report run
``build`` to make the same tree here, where no Docker engine exists.

    python scripts/image_tree.py build DIR [--extras all]  # make, install, strip
    python scripts/image_tree.py strip VENV                # strip an installed venv

What is cut, and why each cut is safe (each is checked by tests/e2e/test_image.py,
which runs the CLI from the stripped tree against a real S3 server):

- botocore's data for every service but S3 and STS (STS: IRSA web-identity
  credentials). botocore loads a service's model only when a client for it is made;
  storage-init makes S3 clients only, and botocore's credential chain calls STS.
- ``examples-1.json`` of the services kept: documentation only.
- pip, setuptools, wheel and their helpers: the image installs nothing at run time.
- ``tests``/``test`` packages, type stubs (``.pyi``), C/Cython sources: never run.
- the symbol tables of compiled extensions (``strip --strip-unneeded``; 22 MB of the
  23 MB of ``.so`` files for the ``s3`` extra are symbols): they serve debuggers
  only; the dynamic symbols that loading needs stay.
- ``__pycache__``: rebuilt once, for the optimisation level the image runs (none),
  with unchecked-hash invalidation: a read-only root file system can never write
  byte code, and checked-hash or timestamp pyc files would be recompiled at every
  start. Sources stay, for tracebacks.
"""

from __future__ import annotations

import argparse
import compileall
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEEP_BOTOCORE_SERVICES = {"s3", "sts"}
BUILD_TOOLS = ("pip", "setuptools", "wheel", "_distutils_hack", "pkg_resources")
DROP_SUFFIXES = (".pyi", ".c", ".h", ".pyx", ".pxd")


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed)."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def site_packages(venv: Path) -> Path:
    """The site-packages directory of `venv`."""
    (found,) = venv.glob("lib/python3.*/site-packages")
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def strip(venv: Path) -> None:
    """Cut from `venv` what the image never runs, then compile byte code once."""
    site = site_packages(venv)
    data = site / "botocore" / "data"
    if data.is_dir():
        for entry in data.iterdir():
            if entry.is_dir() and entry.name not in KEEP_BOTOCORE_SERVICES:
                shutil.rmtree(entry)
        for example in data.glob("*/*/examples-1.json"):
            example.unlink()
    for entry in site.iterdir():
        name = entry.name.split("-")[0].lower()
        if name in BUILD_TOOLS or entry.name == "distutils-precedence.pth":
            _remove(entry)
    for script in venv.glob("bin/*"):
        if script.name.startswith(("pip", "activate", "Activate", "wheel")):
            script.unlink()
    for root, dirs, files in os.walk(site):
        for d in list(dirs):
            if d in ("tests", "test", "__pycache__"):
                shutil.rmtree(Path(root, d))
                dirs.remove(d)
        for f in files:
            if f.endswith(DROP_SUFFIXES):
                Path(root, f).unlink()
    strip_binary = shutil.which("strip")
    if strip_binary:
        libraries = [str(p) for p in site.rglob("*.so")]
        if libraries:
            subprocess.run([strip_binary, "--strip-unneeded", *libraries], check=True)
    else:
        print("strip not found: shared libraries keep their symbols", file=sys.stderr)
    compileall.compile_dir(
        site,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def build(dest: Path, extras: str, python: str = sys.executable) -> Path:
    """Make ``dest/venv`` with storage-init[extras] installed, then strip it."""
    venv = dest / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{ROOT}[{extras}]",
        ],
        # As the Dockerfile sets it: the image must have the MD5 kernel.
        env={**os.environ, "STORAGE_INIT_NATIVE": "require"},
        check=True,
    )
    strip(venv)
    return venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="make DIR/venv, install, strip")
    b.add_argument("dir", type=Path)
    b.add_argument("--extras", default="all")
    s = sub.add_parser("strip", help="strip an installed venv in place")
    s.add_argument("venv", type=Path)
    args = parser.parse_args()
    if args.command == "build":
        venv = build(args.dir, args.extras)
        print(f"{venv}: {tree_size(venv) / 1e6:.1f} MB")
    else:
        before = tree_size(args.venv)
        strip(args.venv)
        print(
            f"stripped {args.venv}: {before / 1e6:.1f} -> "
            f"{tree_size(args.venv) / 1e6:.1f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
