"""Configuration: frozen, validated value objects, and the one place that reads env.

`from_env` is the only function in the library that looks at environment variables
(the SDKs' own credential chains aside). The CLI calls it; library callers build the
dataclasses themselves, so a server embedding storage_init is never surprised by its
process environment. Precedence: CLI flag > ``STORAGE_INIT_*`` / KServe variable >
default.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

from .errors import ConfigError
from .models import KiB, MiB, VerifyMode

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "AzureOptions",
    "GCSOptions",
    "HTTPOptions",
    "ProxyConfig",
    "RetryConfig",
    "S3Options",
    "StorageConfig",
    "TransferConfig",
    "from_env",
    "parse_size",
]

#: aiohttp's read buffer, for requests through a proxy. 1 MiB: with aiohttp, 2 GiB
#: from SeaweedFS took 2.6-3.4 s against 3.9-4.1 s with 256 KiB and with 4 MiB;
#: 3-4 alternating runs each, `/usr/bin/time`, by hand.
READ_BUFFER = 1 * MiB
#: The body buffer each direct connection starts with (`backends._wire`); it
#: grows to the engine's chunk size if that is larger.
WIRE_BUFFER = 256 * KiB
#: The most a connection holds beyond our own chunks. Direct connections hold
#: none: the engine writes straight from their buffer, which is the chunk.
#: Through a proxy aiohttp pauses the socket above twice its read buffer, and one
#: socket read may overshoot by 256 KiB.
CONNECTION_BUFFER = 2 * READ_BUFFER + 256 * KiB
#: Requests in flight at most, whatever the configuration: each has a worker
#: thread (`_threads`) while its body is received.
MAX_REQUESTS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryConfig:
    """Exponential backoff with full jitter for body-stream and request retries.

    Attributes:
        max_attempts: attempts per byte range, the first included.
        initial_backoff: seconds before the first retry (before jitter).
        max_backoff: ceiling of one backoff, in seconds.
        total_timeout: seconds after which one range stops retrying.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    total_timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = "retry max_attempts must be at least 1"
            raise ConfigError(msg)
        if not 0 <= self.initial_backoff <= self.max_backoff:
            msg = "retry backoffs must satisfy 0 <= initial <= max"
            raise ConfigError(msg)
        if self.total_timeout <= 0:
            msg = "retry total_timeout must be positive"
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferConfig:
    """Knobs of the transfer engine.

    Objects larger than `part_size` are fetched as `part_size` ranges (aligned to
    the upload's parts when a multipart checksum needs it); smaller ones whole.
    At most `max_concurrency` ranges (and other requests) are in flight across all
    files and all source/destination pairs, plus at most `small_file_concurrency`
    whole-object GETs of small files: those are bound by the round trip, not by
    bandwidth, so more of them go at once.

    Peak memory held in flight is bounded, whatever the object sizes or counts, by::

        (max_concurrency + io_concurrency) * chunk_size
            + max_concurrency * CONNECTION_BUFFER          (2.25 MiB)
            + small_file_concurrency * max(chunk_size, WIRE_BUFFER)

    Each request gathers at most one chunk before writing it, and its connection
    buffers at most `CONNECTION_BUFFER` more (a direct connection holds nothing
    more: its buffer is the chunk; the bound is for bodies through a proxy); each
    of the `io_concurrency` hashing threads reads back through one chunk-sized
    buffer. Small files go whole over direct connections only, each through its
    connection's buffer (`WIRE_BUFFER` at least). With the defaults: (8 + 2) *
    256 KiB + 8 * 2.25 MiB + 64 * 256 KiB = 36.5 MiB, on top of the interpreter
    and SDKs (about 60-70 MiB with aiobotocore). A thread hashing multipart-ETag
    parts maps 16 MiB of the file at a time instead (`_md5lanes.STEP` per lane):
    page cache, counted in the RSS while mapped. A range received by splice (no
    CRC to compute, `splice` on) holds up to 1 MiB of the socket's pages in its
    pipe: kernel memory, outside the RSS but inside a container's memory limit.

    The defaults were chosen by measurement (2 GiB from a local SeaweedFS on 2
    cores, 3 alternating runs each by hand with STORAGE_INIT_CHUNK_SIZE): 256 KiB
    chunks, received, written and checksummed by one thread while still in its
    core's cache, took 2.05-2.2 s against 2.6-3.6 s for 1 MiB and 2.6 s for 64 KiB
    (s5cmd 2.05-2.2 s in the same runs); 8 requests
    were as fast as 12 or 16 and faster than 4; 32 MiB parts as fast as 16 or 64.
    Small files, 1000 x 100 KiB with 30 ms added to every response (a delaying
    proxy, 2 alternating runs by hand): 5.3 s with 8 GETs at once, 2.6 with 16,
    1.7 with 32, 1.5 with 64 (s5cmd, 256 at once: 1.4 s); without the delay, 64
    were as fast as 8.

    Attributes:
        part_size: range size in bytes for large objects. Env STORAGE_INIT_PART_SIZE.
        chunk_size: bytes received from the network per step (then written in
            `writer.WRITE_PIECE` pieces). Env STORAGE_INIT_CHUNK_SIZE.
        max_concurrency: ranges of large files (and any other requests but
            small files' GETs) in flight, all files and pairs together. Env
            STORAGE_INIT_CONCURRENCY.
        small_file_concurrency: whole-object GETs of files up to `part_size` in
            flight, on top of `max_concurrency` (each in a worker thread of its
            own). Env STORAGE_INIT_SMALL_FILE_CONCURRENCY.
        io_concurrency: threads for MD5/SHA-256 hashing and file creation.
        stall_timeout: seconds without a byte after which a request is abandoned
            and retried. Env STORAGE_INIT_STALL_TIMEOUT.
        skip_unchanged: skip files that the destination's manifest shows are
            already there, unchanged, from the same object version (see
            `storage_init.manifest`). Off with STORAGE_INIT_FORCE=1 or ``--force``.
        extract_archives: unpack a source that is a single .tar, .tar.gz, .tgz,
            .tar.bz2, .tar.xz or .zip file into the destination and delete it, as
            KServe does. Off with STORAGE_INIT_EXTRACT=0.
        max_unpacked: the most bytes an archive may unpack to (a bomb stops
            there); None means 100 times the archive's size, at least 1 GiB. Env
            STORAGE_INIT_MAX_UNPACKED.
        verify: how to check files. Env STORAGE_INIT_VERIFY.
        splice: move the bodies of ranges that feed no CRC (their file is checked
            by its MD5 read back, or not at all) from the socket to the file by
            splice(2), one copy in the kernel, rather than receiving them into a
            buffer and writing it (two). Off by default: its cost is the less
            predictable. The 2 GiB MD5 model, by hand (`benchmarks.alternate`,
            medians of the whole process's system seconds): an earlier session
            had splice ahead, 1.30 s against 1.77 (4 rounds); on an Intel Xeon
            with AVX-512, six sets of 6-12 rounds in one session had it behind
            every time, by a margin that varied from set to set (in order: 1.81,
            1.59, 1.33, 1.97, 2.32, 2.01 s against 1.21, 1.07, 1.14, 1.17, 1.17,
            1.05; wall 2.55-3.37 s against 2.26-2.58, s5cmd 1.93-2.21). perf
            puts half of a spliced run's samples in the kernel's copy from the
            pipe to the page cache. On with STORAGE_INIT_SPLICE=1.
        retry: the retry policy for ranges.
    """

    part_size: int = 32 * MiB
    chunk_size: int = 256 * KiB
    max_concurrency: int = 8
    small_file_concurrency: int = 64
    io_concurrency: int = 2
    stall_timeout: float = 30.0
    skip_unchanged: bool = True
    extract_archives: bool = True
    max_unpacked: int | None = None
    verify: VerifyMode = VerifyMode.AUTO
    splice: bool = False
    retry: RetryConfig = field(default_factory=RetryConfig)

    def __post_init__(self) -> None:
        if self.part_size < 5 * MiB:
            msg = "part_size must be at least 5 MiB"
            raise ConfigError(msg)
        if not 16 * KiB <= self.chunk_size <= self.part_size:
            msg = "chunk_size must be between 16 KiB and part_size"
            raise ConfigError(msg)
        for name in ("max_concurrency", "small_file_concurrency", "io_concurrency"):
            if getattr(self, name) < 1:
                msg = f"{name} must be at least 1"
                raise ConfigError(msg)
        if self.max_concurrency + self.small_file_concurrency > MAX_REQUESTS:
            msg = (
                f"max_concurrency + small_file_concurrency must be at most "
                f"{MAX_REQUESTS} (a worker thread each)"
            )
            raise ConfigError(msg)
        if self.stall_timeout <= 0:
            msg = "stall_timeout must be positive"
            raise ConfigError(msg)

    @property
    def memory_bound(self) -> int:
        """The bound on bytes in flight stated in the class docstring."""
        chunks = self.max_concurrency + self.io_concurrency
        small = self.small_file_concurrency * max(self.chunk_size, WIRE_BUFFER)
        return (
            chunks * self.chunk_size + self.max_concurrency * CONNECTION_BUFFER + small
        )

    @property
    def connections(self) -> int:
        """Connections a backend may hold open to one host.

        Every request in flight, and a few for listings and metadata.
        """
        return self.max_concurrency + self.small_file_concurrency + 4

    def with_memory_budget(self, budget: int) -> Self:
        """Return a copy whose `memory_bound` fits in `budget` bytes.

        Concurrency is kept when it fits; otherwise the small files' concurrency
        shrinks to the ranges' (what it was before it had a limit of its own),
        then the chunk size, then both concurrencies, in that order.

        Raises:
            ConfigError: the budget is below 4 MiB.
        """
        if budget < 4 * MiB:
            msg = "memory budget must be at least 4 MiB"
            raise ConfigError(msg)
        cfg = self
        while cfg.memory_bound > budget:
            small = cfg.small_file_concurrency
            if small > cfg.max_concurrency:
                small = max(cfg.max_concurrency, small // 2)
                cfg = replace(cfg, small_file_concurrency=small)
            elif cfg.chunk_size > 64 * KiB:
                cfg = replace(cfg, chunk_size=cfg.chunk_size // 2)
            elif small > 1:
                cfg = replace(cfg, small_file_concurrency=small // 2)
            elif cfg.max_concurrency > 1:
                cfg = replace(cfg, max_concurrency=cfg.max_concurrency // 2)
            else:
                break
        return cfg


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Options:
    """Options of the S3 backend, each read from the KServe variable it names.

    Credentials left as None come from the AWS credential chain (environment,
    shared files, IRSA web identity, instance metadata), which we never re-implement.

    Attributes:
        endpoint_url: AWS_ENDPOINT_URL, or ``endpoint_url`` in STORAGE_CONFIG.
        region: AWS_DEFAULT_REGION, or ``region`` in STORAGE_CONFIG.
        anonymous: ``awsAnonymousCredential=true``: unsigned requests.
        verify_ssl: S3_VERIFY_SSL (``0``/``false`` turn TLS verification off).
        ca_bundle: AWS_CA_BUNDLE, else ``CA_BUNDLE_VOLUME_MOUNT_POINT/cabundle.crt``
            when CA_BUNDLE_CONFIGMAP_NAME is set.
        addressing_style: ``virtual`` when S3_USER_VIRTUAL_BUCKET=true, else ``auto``.
        use_accelerate: S3_USE_ACCELERATE=true.
        connect_timeout: S3_CONNECT_TIMEOUT seconds (default 15).
        read_timeout: S3_READ_TIMEOUT seconds (default 30).
        max_attempts: S3_MAX_ATTEMPTS, the SDK's own request attempts (default 3).
        access_key_id: ``access_key_id`` from STORAGE_CONFIG, else AWS_ACCESS_KEY_ID
            (never logged).
        secret_access_key: ``secret_access_key`` from STORAGE_CONFIG, else
            AWS_SECRET_ACCESS_KEY (never logged).
        session_token: AWS_SESSION_TOKEN, with keys from the environment.
        page_size: keys per listing page (S3's maximum is 1000).
        sdk: send HEADs and listings through aiobotocore even when static keys (or
            anonymous access) and a region or endpoint would let storage-init send
            them itself. Set when the environment asks for what only the SDK
            resolves (AWS_PROFILE, AWS_ENDPOINT_URL_S3, FIPS or
            dual-stack endpoints, S3_USE_ACCELERATE), or by STORAGE_INIT_S3_SDK=1.
    """

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False
    verify_ssl: bool = True
    ca_bundle: str | None = None
    addressing_style: str = "auto"
    use_accelerate: bool = False
    connect_timeout: float = 15.0
    read_timeout: float = 30.0
    max_attempts: int = 3
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    page_size: int = 1000
    sdk: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 1000:
            msg = "S3 page_size must be between 1 and 1000"
            raise ConfigError(msg)
        if self.addressing_style not in ("auto", "virtual", "path"):
            msg = "addressing_style must be auto, virtual or path"
            raise ConfigError(msg)
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            msg = "S3 timeouts must be positive"
            raise ConfigError(msg)
        if self.max_attempts < 1:
            msg = "S3_MAX_ATTEMPTS must be at least 1"
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class GCSOptions:
    """Options of the gs:// backend.

    Attributes:
        emulator_host: STORAGE_EMULATOR_HOST (``http://host:port``): the API root of
            an emulator; no credentials are sent to it.
        credentials_file: GOOGLE_APPLICATION_CREDENTIALS, a service account file.
            Without it gcloud-aio-auth looks for default credentials (the gcloud
            file, the metadata server); if none is found, reads are anonymous, as
            with KServe.
        anonymous: never send credentials (public buckets).
        verify_ssl: verify TLS certificates.
        connect_timeout: seconds to connect.
        read_timeout: seconds without a byte before a read fails.
        page_size: objects per listing page (GCS's maximum is 1000).
    """

    emulator_host: str | None = None
    credentials_file: str | None = None
    anonymous: bool = False
    verify_ssl: bool = True
    connect_timeout: float = 15.0
    read_timeout: float = 30.0
    page_size: int = 1000

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 1000:
            msg = "GCS page_size must be between 1 and 1000"
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class AzureOptions:
    """Options of the Azure Blob backend (``az://`` and Azure Blob URLs).

    Credentials are tried in KServe's order, after two that name themselves: a SAS
    token in the URL's query, then the connection string (when it is for the URL's
    account), then a service principal or workload identity (when a client ID is
    set), then the access key, then a SAS token, else anonymous access.

    Attributes:
        connection_string: AZURE_STORAGE_CONNECTION_STRING (account, endpoint, and a
            key or SAS). Its BlobEndpoint also serves URLs of the same account,
            which is how a private endpoint or Azurite is reached.
        account_name: AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_ACCOUNT: the
            account of ``az://`` URIs when no connection string names one.
        access_key: AZURE_STORAGE_ACCESS_KEY (KServe; AZURE_STORAGE_ACCOUNT_KEY and
            AZURE_STORAGE_KEY too): an account key, or a SAS token.
        sas_token: AZURE_STORAGE_SAS_TOKEN.
        client_id: AZURE_CLIENT_ID, or KServe's legacy AZ_CLIENT_ID. When set, an
            azure-identity credential is used (extra ``azure-identity``): a client
            secret if one is given, otherwise DefaultAzureCredential (workload
            identity, managed identity).
        tenant_id: AZURE_TENANT_ID or AZ_TENANT_ID.
        client_secret: AZURE_CLIENT_SECRET or AZ_CLIENT_SECRET.
        anonymous: never send credentials (public containers).
        verify_ssl: verify TLS certificates.
        ca_bundle: a PEM file of CAs to trust instead of the system's
            (REQUESTS_CA_BUNDLE or SSL_CERT_FILE, which the Azure SDKs honour).
        connect_timeout: seconds to connect.
        read_timeout: seconds without a byte before a read fails.
        page_size: blobs per listing page (the service's maximum is 5000).
    """

    connection_string: str | None = field(default=None, repr=False)
    account_name: str | None = None
    access_key: str | None = field(default=None, repr=False)
    sas_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    anonymous: bool = False
    verify_ssl: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 15.0
    read_timeout: float = 30.0
    page_size: int = 5000

    def __post_init__(self) -> None:
        if not 1 <= self.page_size <= 5000:
            msg = "Azure page_size must be between 1 and 5000"
            raise ConfigError(msg)


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPOptions:
    """Options of the http(s):// backend.

    Attributes:
        headers: extra request headers by host name, from KServe's ``<host>-headers``
            variables (a JSON object each). Never logged.
        ca_bundle: CA bundle path: CA_BUNDLE_VOLUME_MOUNT_POINT/cabundle.crt when
            CA_BUNDLE_CONFIGMAP_NAME is set (KServe), else the system store.
        verify_ssl: verify TLS certificates.
        sha256: the expected SHA-256 (hex) of a single downloaded file (``--sha256``),
            checked when the server offers no digest of its own, and in addition to
            one under ``--verify strict``.
        connect_timeout: seconds to connect.
        read_timeout: seconds without a byte before a read fails.
    """

    headers: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )
    ca_bundle: str | None = None
    verify_ssl: bool = True
    sha256: str | None = None
    connect_timeout: float = 15.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            msg = "--sha256 must be 64 hexadecimal digits"
            raise ConfigError(msg)


_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """HTTP proxies for the requests storage-init sends itself.

    Attributes:
        http: proxy for http:// URLs (HTTP_PROXY / http_proxy).
        https: proxy for https:// URLs (HTTPS_PROXY / https_proxy).
        no_proxy: hosts or domain suffixes that bypass the proxy (NO_PROXY); ``*``
            bypasses it for every host.
    """

    http: str | None = field(default=None, repr=False)
    https: str | None = field(default=None, repr=False)
    no_proxy: tuple[str, ...] = ()

    def for_url(self, url: str) -> str | None:
        """Return the proxy to use for `url`, or None to connect directly."""
        scheme, _, rest = url.partition("://")
        proxy = self.https if scheme == "https" else self.http
        if proxy is None:
            return None
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        host = host.strip("[]").lower()
        for entry in self.no_proxy:
            entry = entry.lower().lstrip(".")
            if entry == "*" or host == entry or host.endswith("." + entry):
                return None
        return proxy


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """Everything a download needs besides its source and destination.

    Attributes:
        transfer: engine knobs.
        s3: options of the S3 backend.
        gcs: options of the GCS backend.
        azure: options of the Azure Blob backend.
        http: options of the http(s) backend.
        proxy: proxies for the requests storage-init sends itself (the SDKs read
            the same variables themselves).
        allow_patterns: fnmatch patterns on relative paths; when not empty, only
            matching files are downloaded. Env STORAGE_ALLOW_PATTERNS.
        ignore_patterns: fnmatch patterns of files to skip, applied after the allow
            list. Env STORAGE_IGNORE_PATTERNS.
    """

    transfer: TransferConfig = field(default_factory=TransferConfig)
    s3: S3Options = field(default_factory=S3Options)
    gcs: GCSOptions = field(default_factory=GCSOptions)
    azure: AzureOptions = field(default_factory=AzureOptions)
    http: HTTPOptions = field(default_factory=HTTPOptions)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Parse ``"1048576"``, ``"64MiB"``, ``"64M"`` or ``"1.5GiB"`` into bytes.

    Units are binary (``M`` and ``MiB`` both mean 1024**2), as for Kubernetes limits.

    Raises:
        ConfigError: the text is not a size.
    """
    match = _SIZE_RE.match(text)
    if not match:
        msg = f"not a size: {text!r} (examples: 1048576, 64MiB, 1GiB)"
        raise ConfigError(msg)
    number, unit, _ = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if not math.isfinite(value):
        msg = f"not a size: {text!r}"
        raise ConfigError(msg)
    return int(value)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _falsy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("0", "false", "no", "off")


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        msg = f"{name} must be a number, not {raw!r}"
        raise ConfigError(msg) from None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"{name} must be an integer, not {raw!r}"
        raise ConfigError(msg) from None


def _patterns(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Parse KServe's pattern variables: a JSON list, a JSON string, or CSV."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return ()
    if raw[0] in '["':
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            msg = f"{name} is not valid JSON: {exc.msg}"
            raise ConfigError(msg) from None
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(p, str) for p in items):
            msg = f"{name} must be a list of strings"
            raise ConfigError(msg)
        return tuple(p.strip() for p in items if p.strip())
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _storage_spec(environ: Mapping[str, str]) -> dict[str, Any]:
    """Merge STORAGE_CONFIG with STORAGE_OVERRIDE_CONFIG (KServe's storage spec)."""
    spec: dict[str, Any] = {}
    for name in ("STORAGE_CONFIG", "STORAGE_OVERRIDE_CONFIG"):
        raw = (environ.get(name) or "").strip()
        if not raw:
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            # The message of a JSON error may quote the secret: name only the place.
            msg = f"{name} is not valid JSON (line {exc.lineno} column {exc.colno})"
            raise ConfigError(msg) from None
        if not isinstance(value, dict):
            msg_0 = f"{name} must be a JSON object"
            raise ConfigError(msg_0)
        spec.update(value)
    return spec


def _s3_options(environ: Mapping[str, str], spec: Mapping[str, Any]) -> S3Options:
    s3_spec = spec if spec.get("type", "s3") == "s3" else {}

    def pick(spec_key: str, env_key: str) -> str | None:
        value = s3_spec.get(spec_key)
        if value is None or value == "":
            return environ.get(env_key) or None
        return str(value)

    ca_bundle = pick("ca_bundle", "AWS_CA_BUNDLE")
    if ca_bundle is None and environ.get("CA_BUNDLE_CONFIGMAP_NAME"):
        mount = environ.get("CA_BUNDLE_VOLUME_MOUNT_POINT") or "/etc/ssl/custom-certs"
        ca_bundle = f"{mount.rstrip('/')}/cabundle.crt"
    verify = pick("verify_ssl", "S3_VERIFY_SSL")
    anonymous = pick("anonymous", "awsAnonymousCredential")
    return S3Options(
        endpoint_url=pick("endpoint_url", "AWS_ENDPOINT_URL"),
        region=pick("region", "AWS_DEFAULT_REGION") or environ.get("AWS_REGION"),
        anonymous=_truthy(anonymous),
        verify_ssl=not _falsy(verify),
        ca_bundle=ca_bundle,
        addressing_style=(
            "virtual" if _truthy(environ.get("S3_USER_VIRTUAL_BUCKET")) else "auto"
        ),
        use_accelerate=_truthy(environ.get("S3_USE_ACCELERATE")),
        connect_timeout=_float(environ, "S3_CONNECT_TIMEOUT", 15.0),
        read_timeout=_float(environ, "S3_READ_TIMEOUT", 30.0),
        max_attempts=_int(environ, "S3_MAX_ATTEMPTS", 3),
        **_s3_keys(environ, s3_spec),
        sdk=_truthy(environ.get("STORAGE_INIT_S3_SDK"))
        or any(environ.get(name) for name in _SDK_ONLY)
        or _truthy(environ.get("AWS_USE_FIPS_ENDPOINT"))
        or _truthy(environ.get("AWS_USE_DUALSTACK_ENDPOINT"))
        or _truthy(environ.get("S3_USE_ACCELERATE")),
    )


#: Variables whose meaning only botocore resolves (profiles, per-service endpoints).
_SDK_ONLY = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL_S3",
)


def _s3_keys(environ: Mapping[str, str], s3_spec: Mapping[str, Any]) -> dict[str, Any]:
    """Static keys: STORAGE_CONFIG's, else the environment's (as botocore reads)."""
    access, secret = s3_spec.get("access_key_id"), s3_spec.get("secret_access_key")
    if access and secret:
        return {"access_key_id": str(access), "secret_access_key": str(secret)}
    access, secret = (
        environ.get("AWS_ACCESS_KEY_ID"),
        environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    if access and secret:
        return {
            "access_key_id": access,
            "secret_access_key": secret,
            "session_token": environ.get("AWS_SESSION_TOKEN") or None,
        }
    return {}


def _gcs_options(environ: Mapping[str, str]) -> GCSOptions:
    host = (environ.get("STORAGE_EMULATOR_HOST") or "").strip().rstrip("/") or None
    if host and "://" not in host:
        host = f"http://{host}"
    return GCSOptions(
        emulator_host=host,
        credentials_file=environ.get("GOOGLE_APPLICATION_CREDENTIALS") or None,
    )


def _azure_options(environ: Mapping[str, str]) -> AzureOptions:
    def first(*names: str) -> str | None:
        for name in names:
            value = (environ.get(name) or "").strip()
            if value:
                return value
        return None

    return AzureOptions(
        connection_string=first("AZURE_STORAGE_CONNECTION_STRING"),
        account_name=first("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"),
        access_key=first(
            "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"
        ),
        sas_token=first("AZURE_STORAGE_SAS_TOKEN"),
        # KServe copies the legacy AZ_* variables into AZURE_*; we read both.
        client_id=first("AZURE_CLIENT_ID", "AZ_CLIENT_ID"),
        tenant_id=first("AZURE_TENANT_ID", "AZ_TENANT_ID"),
        client_secret=first("AZURE_CLIENT_SECRET", "AZ_CLIENT_SECRET"),
        ca_bundle=first("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"),
    )


def _http_options(environ: Mapping[str, str]) -> HTTPOptions:
    headers: dict[str, Mapping[str, str]] = {}
    for name, raw in environ.items():
        if not name.endswith("-headers") or not raw.strip():
            continue
        host = name.removesuffix("-headers").lower()
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            # The value holds credentials: name the variable, never quote it.
            msg = f"{name} is not valid JSON"
            raise ConfigError(msg) from None
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            msg = f"{name} must be a JSON object of strings"
            raise ConfigError(msg)
        headers[host] = MappingProxyType(dict(value))
    ca_bundle = None
    if environ.get("CA_BUNDLE_CONFIGMAP_NAME"):
        mount = environ.get("CA_BUNDLE_VOLUME_MOUNT_POINT") or "/etc/ssl/custom-certs"
        ca_bundle = f"{mount.rstrip('/')}/cabundle.crt"
    return HTTPOptions(headers=MappingProxyType(headers), ca_bundle=ca_bundle)


def _transfer(environ: Mapping[str, str]) -> TransferConfig:
    cfg = TransferConfig()
    changes: dict[str, Any] = {}
    if raw := environ.get("STORAGE_INIT_PART_SIZE"):
        changes["part_size"] = parse_size(raw)
    if raw := environ.get("STORAGE_INIT_CHUNK_SIZE"):
        changes["chunk_size"] = parse_size(raw)
    if environ.get("STORAGE_INIT_CONCURRENCY"):
        changes["max_concurrency"] = _int(environ, "STORAGE_INIT_CONCURRENCY", 0)
    if environ.get("STORAGE_INIT_SMALL_FILE_CONCURRENCY"):
        name = "STORAGE_INIT_SMALL_FILE_CONCURRENCY"
        changes["small_file_concurrency"] = _int(environ, name, 0)
    if environ.get("STORAGE_INIT_STALL_TIMEOUT"):
        changes["stall_timeout"] = _float(environ, "STORAGE_INIT_STALL_TIMEOUT", 0)
    if raw := environ.get("STORAGE_INIT_VERIFY"):
        changes["verify"] = parse_verify(raw)
    if _truthy(environ.get("STORAGE_INIT_FORCE")):
        changes["skip_unchanged"] = False
    if _falsy(environ.get("STORAGE_INIT_EXTRACT")):
        changes["extract_archives"] = False
    if _truthy(environ.get("STORAGE_INIT_SPLICE")):
        changes["splice"] = True
    if raw := environ.get("STORAGE_INIT_MAX_UNPACKED"):
        changes["max_unpacked"] = parse_size(raw)
    cfg = replace(cfg, **changes)
    if raw := environ.get("STORAGE_INIT_MEMORY_BUDGET"):
        cfg = cfg.with_memory_budget(parse_size(raw))
    return cfg


def parse_verify(text: str) -> VerifyMode:
    """Parse a `VerifyMode` name.

    Raises:
        ConfigError: not one of auto, strict, size, off.
    """
    try:
        return VerifyMode(text.strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in VerifyMode)
        msg = f"verify must be one of {choices}, not {text!r}"
        raise ConfigError(msg) from None


def from_env(environ: Mapping[str, str]) -> StorageConfig:
    """Build a `StorageConfig` from KServe's and storage-init's variables.

    Args:
        environ: the environment to read, usually ``os.environ``. It is never
            modified.

    Raises:
        ConfigError: a variable holds an invalid value.
    """
    spec = _storage_spec(environ)

    def env(name: str) -> str | None:
        return environ.get(name) or environ.get(name.lower()) or None

    proxy = ProxyConfig(
        http=env("HTTP_PROXY"),
        https=env("HTTPS_PROXY"),
        no_proxy=tuple(
            h.strip() for h in (env("NO_PROXY") or "").split(",") if h.strip()
        ),
    )
    return StorageConfig(
        transfer=_transfer(environ),
        s3=_s3_options(environ, spec),
        gcs=_gcs_options(environ),
        azure=_azure_options(environ),
        http=_http_options(environ),
        proxy=proxy,
        allow_patterns=_patterns(environ, "STORAGE_ALLOW_PATTERNS"),
        ignore_patterns=_patterns(environ, "STORAGE_IGNORE_PATTERNS"),
    )
