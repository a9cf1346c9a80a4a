"""The ``storage-init SRC DEST [SRC DEST ...]`` command (KServe's entrypoint contract).

Exit codes:

==== ===================================================================
0    every file downloaded and verified
1    a transfer failed (network, server, integrity, local disk)
2    usage or configuration error
3    not found, or access denied
130  interrupted by SIGINT
143  terminated by SIGTERM
==== ===================================================================

On failure the one-line reason goes to stderr and, when it exists, to
``/dev/termination-log`` (what Kubernetes shows as the container's message).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._logging import configure_logging
from ._progress import ProgressPrinter
from ._redact import redact_text
from ._version import __version__
from .errors import (
    AccessDeniedError,
    ConfigError,
    ObjectNotFoundError,
    StorageInitError,
    flatten_group,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .config import StorageConfig
    from .models import DownloadReport

__all__ = ["EXIT_CODES", "main", "run"]

log = logging.getLogger("storage_init")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: Error class -> exit code; the first matching entry wins.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_USAGE),
    (ObjectNotFoundError, EXIT_NOT_FOUND),
    (AccessDeniedError, EXIT_NOT_FOUND),
    (StorageInitError, EXIT_FAILED),
)
TERMINATION_LOG = Path("/dev/termination-log")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit 2
        raise _UsageError(message)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's, told the width rather than asking `shutil` for it.

    argparse makes a formatter at every `add_argument` (to check the metavar),
    and without a width each one imports `shutil` (and with it `bz2` and `lzma`):
    3.5-4 ms of every start, for a help text that is rarely printed.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def _columns() -> int:
    """The terminal's width as `shutil.get_terminal_size` finds it, or 80."""
    with contextlib.suppress(KeyError, ValueError):
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="storage-init",
        description=(
            "Download models from object storage into local directories, in "
            "parallel, verified, and renamed into place only when complete."
        ),
        epilog=(
            "exit codes:\n"
            "  0    ok: every file downloaded and verified\n"
            "  1    transfer failed\n"
            "  2    usage or configuration error\n"
            "  3    not found or access denied\n"
            "  130  interrupted (SIGINT)\n"
            "  143  terminated (SIGTERM)\n"
            "\nKServe's variables (AWS_*, S3_*, STORAGE_CONFIG, ...) are honoured."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "pairs", nargs="*", metavar="SRC DEST", help="source URI and directory pairs"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        help="ranges and other requests in flight (STORAGE_INIT_CONCURRENCY)",
    )
    parser.add_argument(
        "--small-file-concurrency",
        type=int,
        help="small files' GETs in flight, on top "
        "(STORAGE_INIT_SMALL_FILE_CONCURRENCY)",
    )
    parser.add_argument(
        "--part-size", help="range size, e.g. 32MiB (STORAGE_INIT_PART_SIZE)"
    )
    parser.add_argument(
        "--memory-budget",
        help="cap on buffered bytes, e.g. 64MiB (STORAGE_INIT_MEMORY_BUDGET)",
    )
    parser.add_argument(
        "--verify",
        help="auto|strict|size|off (STORAGE_INIT_VERIFY, default auto)",
    )
    parser.add_argument("--report", type=Path, help="write a JSON report to PATH")
    parser.add_argument(
        "--sha256", metavar="HEX", help="expected SHA-256 of an http(s):// file"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="download every file, even those the manifest shows are in place "
        "(STORAGE_INIT_FORCE=1)",
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default=None, help="log line format"
    )
    parser.add_argument("--quiet", action="store_true", help="only log errors")
    parser.add_argument(
        "--debug", action="store_true", help="debug logs and tracebacks"
    )
    parser.add_argument(
        "--version", action="version", version=f"storage-init {__version__}"
    )
    return parser


def _parse_args(argv: list[str]) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    if not args.pairs or len(args.pairs) % 2:
        msg = "expected SRC DEST pairs: storage-init SRC DEST [SRC DEST ...]"
        raise _UsageError(msg)
    return args


def _config(args: argparse.Namespace, environ: dict[str, str]) -> StorageConfig:
    # The engine, anyio and asyncio load only past argument parsing: --version and
    # usage errors answer in ~30 ms instead of ~120.
    from .config import from_env, parse_size, parse_verify

    config = from_env(environ)
    transfer = config.transfer
    if args.concurrency is not None:
        transfer = replace(transfer, max_concurrency=args.concurrency)
    if args.small_file_concurrency is not None:
        small = args.small_file_concurrency
        transfer = replace(transfer, small_file_concurrency=small)
    if args.part_size is not None:
        transfer = replace(transfer, part_size=parse_size(args.part_size))
    if args.verify is not None:
        transfer = replace(transfer, verify=parse_verify(args.verify))
    if args.force:
        transfer = replace(transfer, skip_unchanged=False)
    if args.memory_budget is not None:
        transfer = transfer.with_memory_budget(parse_size(args.memory_budget))
    if args.sha256 is not None:
        config = replace(config, http=replace(config.http, sha256=args.sha256))
    return replace(config, transfer=transfer)


def _exit_code(exc: BaseException) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return EXIT_FAILED


def _summary(reports: Sequence[DownloadReport], seconds: float) -> str:
    files = [f for r in reports for f in r.files]
    fetched = [f for f in files if not f.verification.startswith("unchanged")]
    total = sum(f.size - f.resumed for f in fetched)
    methods = Counter(f.verification for f in fetched)
    how = ", ".join(f"{n} {m}" for m, n in sorted(methods.items())) or "nothing"
    rate = total / seconds / 1e6 if seconds > 0 else 0.0
    line = (
        f"downloaded {len(fetched)} files, {total / 1024**3:.2f} GiB in "
        f"{seconds:.2f} s ({rate:.0f} MB/s); verified: {how}"
    )
    if skipped := len(files) - len(fetched):
        line += f"; {skipped} already in place (unchanged)"
    return line


def _write_report(path: Path, reports: Sequence[DownloadReport], secs: float) -> None:
    data = {
        "version": __version__,
        "seconds": round(secs, 6),
        "bytes": sum(r.bytes for r in reports),
        "files": sum(len(r.files) for r in reports),
        "pairs": [r.as_dict() for r in reports],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def _termination_message(message: str) -> None:
    if TERMINATION_LOG.exists():
        with contextlib.suppress(OSError):
            TERMINATION_LOG.write_text(message + "\n")


async def _run(
    pairs: list[tuple[str, str]], config: StorageConfig, progress: ProgressPrinter
) -> tuple[Sequence[DownloadReport] | None, int | None]:
    """Run the download; return the reports, or the signal that interrupted it."""
    import anyio

    from .api import download_many

    result: list[Sequence[DownloadReport]] = []
    interrupted: list[int] = []
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    interrupted.append(signum)
                    tg.cancel_scope.cancel()
                    return

        async def work() -> None:
            result.append(await download_many(pairs, config=config, progress=progress))
            tg.cancel_scope.cancel()

        tg.start_soon(watch_signals)
        tg.start_soon(work)
    if interrupted:
        return None, interrupted[0]
    return result[0], None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        args = _parse_args(args_list)
        environ = dict(os.environ)
        fmt = args.log_format or environ.get("STORAGE_INIT_LOG_FORMAT", "text")
        configure_logging(fmt=fmt, quiet=args.quiet, debug=args.debug)
        config = _config(args, environ)
    except _UsageError as exc:
        print(f"storage-init: error: {exc}", file=sys.stderr)  # noqa: T201
        print("usage: storage-init [options] SRC DEST [SRC DEST ...]", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"storage-init: error: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_USAGE
    pairs = list(zip(args.pairs[::2], args.pairs[1::2], strict=True))
    progress = ProgressPrinter(stream=sys.stderr, quiet=args.quiet)
    sent_ahead = _send_ahead(pairs, config)
    import anyio

    from . import api  # noqa: F401  (the engine: loaded before the freeze below)

    # Everything loaded so far lives until exit: keep the cyclic GC from walking
    # it again and again while the download allocates. And collect the young
    # generation less often: every 700 allocations (the default), 1000 small
    # files cost 130 collections and 0.1-0.2 s of the event loop's time (timed
    # by `benchmarks.lane_probe`; every 10000: 0.02 s, and 2-4 MiB more RSS).
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    try:
        reports, signum = anyio.run(_run, pairs, config, progress, backend="asyncio")
    except BaseException as raised:
        _drop_ahead(sent_ahead)
        # The top level maps every failure, ours or not, to a line and an exit code.
        error = (
            flatten_group(raised) if isinstance(raised, BaseExceptionGroup) else raised
        )
        if isinstance(error, KeyboardInterrupt):
            return EXIT_SIGINT
        code = _exit_code(error)
        message = redact_text(
            str(error) if isinstance(error, StorageInitError) else repr(error)
        )
        # The traceback only with --debug: an error is one line otherwise.
        log.error("%s", message, exc_info=debug)  # noqa: TRY400
        _termination_message(message)
        return code
    _drop_ahead(sent_ahead)
    progress.finish()
    if signum is not None:
        name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
        log.error("interrupted by %s; partial files removed", name)
        _termination_message(f"interrupted by {name}")
        return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    assert reports is not None
    seconds = progress.elapsed()
    log.info("%s", _summary(reports, seconds))
    if args.report is not None:
        try:
            _write_report(args.report, reports, seconds)
        except OSError as exc:
            log.error("cannot write the report %s: %s", args.report, exc.strerror)  # noqa: TRY400
            return EXIT_FAILED
    return EXIT_OK


def _send_ahead(pairs: list[tuple[str, str]], config: StorageConfig) -> bool:
    """Send the S3 sources' first requests before the engine loads; whether any went.

    The listing then comes back while Python imports the engine, anyio and
    asyncio, instead of after (`backends._s3requests.send_ahead`). A source that
    cannot be parsed, or whose extra is missing, is left to the run to report.
    """
    sources = [src for src, _ in pairs if src.startswith("s3://")]
    if not sources:
        return False
    from .backends import extra_installed

    # The extra is looked for, not imported; nor is the backend's module, which
    # loads anyio: the requests would leave 10-30 ms later.
    if not extra_installed("s3"):
        return False
    from .backends._s3requests import send_ahead
    from .uri import parse_uri

    sent = False
    for src in sources:
        try:
            sent = send_ahead(config, parse_uri(src)) or sent
        except (StorageInitError, ValueError):
            continue
    if sent and log.isEnabledFor(logging.DEBUG):
        from ._local import process_age

        if (age := process_age()) is not None:
            ms = age * 1e3
            log.debug("first request %.0f ms after the process started (ahead)", ms)
    return sent


def _drop_ahead(sent: bool) -> None:
    """Close the connections of requests sent ahead that the run never asked for."""
    if sent:
        from .backends._wire import drop_ahead

        drop_ahead()


def run() -> NoReturn:
    """The process's entry point: `main`, then exit at once with its code.

    When `main` returns, every file is in place or removed, and the report
    and the termination message are written and closed; what is left is the
    interpreter's teardown (idle worker threads joined, every module freed):
    ~15 ms of a small download's wall time (by hand, a scratch timer), spent for
    nothing. The log handlers and the standard streams are flushed first.
    """
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
            stream.flush()
    os._exit(code)
