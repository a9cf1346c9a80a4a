"""Dependency footprint of storage-init's extras, measured beside kserve-storage.

    .venv/bin/python scripts/footprint.py [--kserve kserve-storage==0.21.0]

For each target it makes a clean virtualenv with Debian's python3 (the distroless
interpreter), installs the target, and reports: third-party packages, installed size
(from the distributions' RECORD files, pip and setuptools excluded, as issue 6
counts), the size of the tree after `image_tree.strip` (what the image ships), two
cold starts (medians of 5 runs, after stripping): the CLI's --version, and importing
everything an S3 download runs (for kserve-storage, its module, which imports all
its backends), and a CycloneDX SBOM. Results go to
benchmarks/results/footprint.{md,json} and sbom-*.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from image_tree import ROOT, site_packages, strip, tree_size

WORK = ROOT / ".footprint"
OUT = ROOT / "benchmarks" / "results"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
EXCLUDED = {"pip", "setuptools", "wheel"}

_INVENTORY = """
import json, os
from importlib.metadata import distributions
rows = []
for d in distributions():
    size = 0
    for f in d.files or ():
        path = d.locate_file(f)
        if os.path.isfile(path) and not os.path.islink(path):
            size += os.path.getsize(path)
    rows.append({"name": d.metadata["Name"], "version": d.version, "size": size})
print(json.dumps(rows))
"""


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _median_ms(argv: list[str]) -> int:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000)


def measure(
    name: str, spec: str, own: str, version: list[str], imports: list[str]
) -> dict[str, object]:
    venv = WORK / name
    shutil.rmtree(venv, ignore_errors=True)
    _run(PYTHON, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    _run(py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec)
    rows = json.loads(_run(py, "-c", _INVENTORY))
    third = [r for r in rows if r["name"].lower() not in EXCLUDED | {own}]
    installed = sum(r["size"] for r in rows if r["name"].lower() not in EXCLUDED)
    sbom = OUT / f"sbom-{name}.json"
    _run(
        sys.executable,
        "-m",
        "cyclonedx_py",
        "environment",
        py,
        "--output-format",
        "JSON",
        "--output-file",
        str(sbom),
    )
    strip(venv)
    stripped = tree_size(site_packages(venv))
    return {
        "target": name,
        "spec": spec,
        "packages": len(third),
        "installed_mb": round(installed / 1e6, 1),
        "stripped_mb": round(stripped / 1e6, 1),
        "version_ms": _median_ms([py, "-I", *version]) if version else None,
        "import_ms": _median_ms([py, "-I", *imports]),
        "third_party": sorted(f"{r['name']}=={r['version']}" for r in third),
        "sbom": str(sbom.relative_to(ROOT)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve", default="kserve-storage==0.21.0")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    _run(sys.executable, "-m", "pip", "install", "--quiet", "cyclonedx-bom")
    version = ["-m", "storage_init", "--version"]
    ours = ["-c", "import storage_init.cli, storage_init.backends.s3"]
    theirs = ["-c", "import kserve_storage.kserve_storage"]
    azure = ["-c", "import storage_init.cli, storage_init.backends.azure"]
    targets = [
        ("storage-init-s3", f"{ROOT}[s3]", "storage-init", version, ours),
        ("storage-init-azure", f"{ROOT}[azure]", "storage-init", version, azure),
        ("storage-init-all", f"{ROOT}[all]", "storage-init", version, ours),
        ("kserve-storage", args.kserve, "kserve-storage", [], theirs),
    ]
    results = []
    for name, spec, own, version_cmd, import_cmd in targets:
        print(f"measuring {name} ...", flush=True)
        results.append(measure(name, spec, own, version_cmd, import_cmd))
    lines = [
        "| target | third-party packages | installed MB | after stripping MB "
        "| --version ms | import of the backend's path ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['target']} | {r['packages']} | {r['installed_mb']} | "
        f"{r['stripped_mb']} | {r['version_ms'] or '-'} | {r['import_ms']} |"
        for r in results
    ]
    table = "\n".join(lines) + "\n"
    (OUT / "footprint.md").write_text(table)
    (OUT / "footprint.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
