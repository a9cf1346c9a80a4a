"""One large file from every backend's local server: storage-init against its peers.

    .venv/bin/python -m benchmarks.backends [--size-gib 2] [--runs 3]
        [--backends s3,gcs,azure,http]

For each backend it starts the project's server script (SeaweedFS, fake-gcs-server,
Azurite, nginx), seeds one file of `--size-gib` GiB as a careful uploader would (S3:
the SDK's full-object CRC64NVME; GCS: the server's CRC32C and MD5; Azure: blocks
committed with a Content-MD5, as ``azcopy --put-md5`` does; http: a SHA-256 handed
to ``--sha256``), then runs storage-init and the peers that speak the protocol, in
alternating order: s5cmd (S3), kserve-storage (GCS, http), the Azure SDK as KServe
calls it (Azure), and curl (http). Every output is compared with the source. Writes
``benchmarks/results/backends.{json,md}``.

Servers compete with the client for the 2 cores: the times say what each emulator
allows on this machine, not what the cloud service would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.installs import ROOT, WORK, peer_python, storage_init_argv
from benchmarks.measure import fresh_dest, run_measured
from benchmarks.run import (
    BIN,
    RESULTS,
    _identical,
    _machine,
    _median_range,
    s5cmd_copy,
)
from benchmarks.seed import make_big_file, seed_sdk

SERVERS = ROOT / "scripts" / "servers"
AZURITE = ROOT / ".servers" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
NAME = "weights.bin"

#: tool name -> argv builder (source URL or locator, destination, environment)
Tool = Callable[[Mapping[str, str], Path], list[str]]


@dataclass(frozen=True)
class Backend:
    script: str
    tools: dict[str, Tool]
    verified: str


def _start(script: str, state: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "SERVERS_PY": sys.executable,
        "AZURITE": str(AZURITE),
        "WEED": str(BIN / "weed"),
    }
    subprocess.run(
        [str(SERVERS / script), "start"], env=env, check=True, capture_output=True
    )
    values = dict(
        item.split("=", 1)
        for item in (state / "env").read_text().split()
        if "=" in item and not item.startswith("'")
    )
    return {**os.environ, **{k: v.strip("'") for k, v in values.items()}}


def _stop(script: str, state: Path) -> None:
    env = {**os.environ, "STATE_DIR": str(state), "SERVERS_PY": sys.executable}
    subprocess.run(
        [str(SERVERS / script), "stop"], env=env, check=False, capture_output=True
    )


def _si(env: Mapping[str, str], dest: Path) -> list[str]:
    # A plain http(s) server has no checksum to offer: the seeder's SHA-256 is
    # given, as a KServe user would give it.
    sha256 = ["--sha256", env["BENCH_SHA256"]] if "BENCH_SHA256" in env else []
    return [*storage_init_argv(), "--quiet", *sha256, env["BENCH_URL"], str(dest)]


def _kserve(env: Mapping[str, str], dest: Path) -> list[str]:
    script = ROOT / "benchmarks" / "kserve_download.py"
    return [peer_python("kserve"), str(script), env["BENCH_URL"], str(dest)]


def _s5cmd(env: Mapping[str, str], dest: Path) -> list[str]:
    return s5cmd_copy(env["BENCH_URL"], dest, env)


def _curl(env: Mapping[str, str], dest: Path) -> list[str]:
    return ["curl", "-sSf", "-o", str(dest / NAME), env["BENCH_URL"]]


def _azure_sdk(env: Mapping[str, str], dest: Path) -> list[str]:
    script = ROOT / "benchmarks" / "azure_sdk_download.py"
    return [peer_python("kserve"), str(script), "bench", f"big/{NAME}", str(dest)]


def _seed_s3(src: Path, env: dict[str, str]) -> None:
    url = f"s3://{env['S3_BUCKET']}/big"
    seed_sdk(src.parent, url, env)
    env["BENCH_URL"] = f"{url}/{NAME}"


def _seed_gcs(src: Path, env: dict[str, str]) -> None:
    """Into fake-gcs-server's filesystem backend (its HTTP uploads buffer in RAM)."""
    from awscrt import checksums

    dst = Path(env["GCS_ROOT"]) / env["GCS_BUCKET"] / "big" / NAME
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    os.link(src, dst)
    md5, crc = hashlib.md5(usedforsecurity=False), 0
    with src.open("rb") as f:
        while block := f.read(64 << 20):
            md5.update(block)
            crc = checksums.crc32c(block, crc)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    digest = base64.b64encode(md5.digest()).decode()
    meta = {
        "StorageClass": "STANDARD",
        "ContentType": "application/octet-stream",
        "Crc32c": base64.b64encode(crc.to_bytes(4, "big")).decode(),
        "Md5Hash": digest,
        "Etag": digest,
        "Created": now,
        "Updated": now,
        "Deleted": "0001-01-01T00:00:00Z",
        "CustomTime": "0001-01-01T00:00:00Z",
        "Generation": time.time_ns() // 1000,
    }
    os.setxattr(dst, "user.metadata", json.dumps(meta).encode())
    env["BENCH_URL"] = f"gs://{env['GCS_BUCKET']}/big/{NAME}"


def _seed_azure(src: Path, env: dict[str, str]) -> None:
    asyncio.run(_upload_azure(src, env["AZURE_STORAGE_CONNECTION_STRING"]))
    env["BENCH_URL"] = f"az://bench/big/{NAME}"


async def _upload_azure(src: Path, conn: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContentSettings
    from azure.storage.blob.aio import BlobServiceClient

    md5 = hashlib.md5(usedforsecurity=False)
    with src.open("rb") as f:
        while block := f.read(64 << 20):
            md5.update(block)
    async with BlobServiceClient.from_connection_string(
        conn, max_block_size=64 << 20, max_single_put_size=64 << 20
    ) as service:
        with contextlib.suppress(ResourceExistsError):
            await service.create_container("bench")
        blob = service.get_blob_client("bench", f"big/{NAME}")
        with src.open("rb") as f:
            await blob.upload_blob(
                f,
                length=src.stat().st_size,
                overwrite=True,
                max_concurrency=4,
                content_settings=ContentSettings(content_md5=bytearray(md5.digest())),
            )


def _seed_http(src: Path, env: dict[str, str]) -> None:
    root = Path(env["HTTP_ROOT"])
    dst = root / NAME
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)
    dst.chmod(0o644)
    sha = hashlib.sha256()
    with src.open("rb") as f:
        while block := f.read(64 << 20):
            sha.update(block)
    env["BENCH_SHA256"] = sha.hexdigest()
    env["BENCH_URL"] = f"{env['HTTP_BASE_URL']}/{NAME}"


SEEDERS: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "s3": _seed_s3,
    "gcs": _seed_gcs,
    "azure": _seed_azure,
    "http": _seed_http,
}
BACKENDS: dict[str, Backend] = {
    "s3": Backend(
        "s3_seaweedfs.sh", {"storage-init": _si, "s5cmd": _s5cmd}, "crc64nvme"
    ),
    "gcs": Backend(
        "gcs_fake.sh", {"storage-init": _si, "kserve-storage": _kserve}, "crc32c"
    ),
    "azure": Backend(
        "azure_azurite.sh",
        {"storage-init": _si, "azure-sdk (KServe's calls)": _azure_sdk},
        "content-md5",
    ),
    "http": Backend(
        "http_nginx.sh",
        {"storage-init": _si, "curl": _curl, "kserve-storage": _kserve},
        "sha256 (--sha256)",
    ),
}


@dataclass(frozen=True)
class Run:
    backend: str
    tool: str
    round: int
    wall: float
    cpu: float
    user: float
    system: float
    max_rss_mib: float
    identical: bool
    code: int


def _bench(name: str, src: Path, runs: int, work: Path) -> list[Run]:
    backend = BACKENDS[name]
    state = work / "servers" / name
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    if name == "http":
        # nginx's workers run as nobody under root: every directory above the files
        # it serves must be world-searchable, which a private work directory is not.
        state = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        state.chmod(0o755)
    env = _start(backend.script, state)
    results: list[Run] = []
    try:
        started = time.perf_counter()
        SEEDERS[name](src / NAME, env)
        print(f"{name}: seeded in {time.perf_counter() - started:.1f} s", flush=True)
        tools = list(backend.tools)
        for rnd in range(runs):
            for tool in tools if rnd % 2 == 0 else tools[::-1]:
                dest = fresh_dest(work / "out")
                argv = backend.tools[tool](env, dest)
                m = run_measured(argv, env=env)
                run = Run(
                    name,
                    tool,
                    rnd,
                    m.wall,
                    m.cpu,
                    m.user,
                    m.system,
                    m.max_rss / 1024**2,
                    _identical(src, dest),
                    m.code,
                )
                results.append(run)
                ok = run.identical and not m.code
                print(
                    f"{rnd} {name:<6} {tool:<28} wall {m.wall:6.2f} s  "
                    f"cpu {m.cpu:5.2f} s  rss {run.max_rss_mib:6.1f} MiB  ok={ok}",
                    flush=True,
                )
                if m.code:
                    print(m.stderr[-1500:], file=sys.stderr)
    finally:
        _stop(backend.script, state)
        shutil.rmtree(work / "out", ignore_errors=True)
        # The server's copy of the file (GBs): made afresh by every run.
        shutil.rmtree(state, ignore_errors=True)
    return results


def _table(runs: list[Run], size_gib: float) -> str:
    lines = [
        f"| backend (server) | tool | wall s | CPU s | peak RSS MiB | {size_gib:g} GiB "
        "identical | storage-init verified |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, backend in BACKENDS.items():
        server = backend.script.removesuffix(".sh").split("_", 1)[1]
        for tool in backend.tools:
            rs = [r for r in runs if r.backend == name and r.tool == tool]
            if not rs:
                continue
            check = backend.verified if tool == "storage-init" else "-"
            wall = _median_range([r.wall for r in rs])
            cpu = _median_range([r.cpu for r in rs])
            rss = _median_range([r.max_rss_mib for r in rs])
            lines.append(
                f"| {name} ({server}) | {tool} | {wall} | {cpu} | {rss} | "
                f"{all(r.identical and not r.code for r in rs)} | {check} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--work", type=Path, default=WORK / "backends")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    names = [b for b in args.backends.split(",") if b]
    if unknown := set(names) - set(BACKENDS):
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    src = make_big_file(
        work / f"file-{args.size_gib:g}", size=int(args.size_gib * 2**30)
    )
    runs: list[Run] = []
    for name in names:
        runs += _bench(name, src, args.runs, work)
    machine = _machine()
    machine["server"] = "each backend's emulator on 127.0.0.1, same machine"
    table = _table(runs, args.size_gib)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "backends.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "size_gib": args.size_gib,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    header = (
        f"One {args.size_gib:g} GiB file per backend, {args.runs} alternating runs; "
        f"median (min-max).\nMachine: {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, {machine['cpu']}, "
        f"Python {machine['python']}.\n\n"
    )
    (args.out / "backends.md").write_text(header + table)
    print(header + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
