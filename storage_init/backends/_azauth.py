"""Which Azure Blob account, endpoint and credential serve a URI. Pure logic, no I/O.

Kept apart from the backend (which needs azure-storage-blob) so the rules are unit
tested without the SDK and without a server.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import AzureOptions
    from ..uri import ObjectURI

__all__ = ["AzureAccess", "parse_connection_string", "resolve_access"]

CredentialKind = Literal["sas", "key", "identity", "anonymous"]

# Azurite's well-known development account, for UseDevelopmentStorage=true.
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBe"
    "ksoGMGw=="
)


@dataclass(frozen=True, slots=True)
class AzureAccess:
    """The account to reach and how to authenticate.

    Attributes:
        endpoint: the Blob service URL of the account, without a trailing ``/``.
        account: the account name (needed to sign with an account key).
        kind: ``sas``, ``key`` (account key), ``identity`` (azure-identity) or
            ``anonymous``.
        secret: the SAS query string (without ``?``) or the account key; empty for
            the other kinds. Never logged.
        source: where the credential came from, for the debug log (no secret).
    """

    endpoint: str
    account: str
    kind: CredentialKind
    secret: str = field(default="", repr=False)
    source: str = ""


def parse_connection_string(text: str) -> dict[str, str]:
    """Split ``Key=Value;Key=Value`` into a dict with case-insensitive keys lowered.

    Values keep their own ``=`` (account keys end in ``==``; SAS tokens contain
    ``&sig=...``).

    Raises:
        ConfigError: a segment has no ``=``. The message never quotes the string.
    """
    out: dict[str, str] = {}
    for segment in text.strip().split(";"):
        if not segment.strip():
            continue
        name, sep, value = segment.partition("=")
        if not sep or not name.strip():
            msg = (
                "AZURE_STORAGE_CONNECTION_STRING is malformed (expected Key=Value;...)"
            )
            raise ConfigError(msg)
        out[name.strip().lower()] = value.strip()
    return out


def _is_sas(value: str) -> bool:
    return "sig=" in value


def _check_key(key: str, origin: str) -> str:
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        msg = f"{origin} is neither an account key (base64) nor a SAS token"
        raise ConfigError(msg) from None
    return key


def _from_connection_string(text: str) -> tuple[str, str, AzureAccess | None]:
    """``(account, endpoint, access or None when it names no credential)``."""
    conn = parse_connection_string(text)
    if conn.get("usedevelopmentstorage", "").lower() == "true":
        proxy = conn.get("developmentstorageproxyuri", "http://127.0.0.1")
        endpoint = f"{proxy.rstrip('/')}:10000/{_DEV_ACCOUNT}"
        return (
            _DEV_ACCOUNT,
            endpoint,
            AzureAccess(endpoint, _DEV_ACCOUNT, "key", _DEV_KEY, "connection string"),
        )
    account = conn.get("accountname", "")
    endpoint = conn.get("blobendpoint", "").rstrip("/")
    if not endpoint:
        if not account:
            msg = "AZURE_STORAGE_CONNECTION_STRING names no AccountName or BlobEndpoint"
            raise ConfigError(msg)
        protocol = conn.get("defaultendpointsprotocol", "https")
        suffix = conn.get("endpointsuffix", "core.windows.net")
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    if not account:
        account = (urlsplit(endpoint).hostname or "").split(".", 1)[0]
    source = "connection string"
    if conn.get("sharedaccesssignature"):
        sas = conn["sharedaccesssignature"].lstrip("?")
        return account, endpoint, AzureAccess(endpoint, account, "sas", sas, source)
    if conn.get("accountkey"):
        key = _check_key(conn["accountkey"], "the connection string's AccountKey")
        return account, endpoint, AzureAccess(endpoint, account, "key", key, source)
    return account, endpoint, None


def resolve_access(options: AzureOptions, uri: ObjectURI | None) -> AzureAccess:
    """Decide the endpoint and credential for `uri` (an ``az`` URI).

    Raises:
        ConfigError: an ``az://`` URI without an account (no connection string and
            no AZURE_STORAGE_ACCOUNT_NAME), an access key that is neither a key nor
            a SAS, or a malformed connection string.
    """
    conn_account, conn_endpoint, conn_access = "", "", None
    if options.connection_string:
        conn_account, conn_endpoint, conn_access = _from_connection_string(
            options.connection_string
        )
    url_endpoint = uri.endpoint if uri is not None else ""
    if url_endpoint:
        account = (urlsplit(url_endpoint).hostname or "").split(".", 1)[0]
        use_conn = bool(conn_account) and conn_account.lower() == account.lower()
        endpoint = conn_endpoint if use_conn else url_endpoint
    elif conn_endpoint:
        account, endpoint, use_conn = conn_account, conn_endpoint, True
    elif options.account_name:
        account, use_conn = options.account_name, False
        endpoint = f"https://{account}.blob.core.windows.net"
    else:
        msg = (
            "az:// names no account: set AZURE_STORAGE_CONNECTION_STRING or "
            "AZURE_STORAGE_ACCOUNT_NAME, or use https://<account>.blob.core.windows.net/"
        )
        raise ConfigError(msg)

    if options.anonymous:
        return AzureAccess(endpoint, account, "anonymous", source="anonymous")
    if uri is not None and _is_sas(uri.query):
        return AzureAccess(endpoint, account, "sas", uri.query, "the URL's SAS token")
    if use_conn and conn_access is not None:
        return conn_access
    if options.client_id:
        return AzureAccess(endpoint, account, "identity", source="azure-identity")
    if options.access_key:
        key = options.access_key.strip()
        if _is_sas(key):
            sas = key.lstrip("?")
            return AzureAccess(
                endpoint, account, "sas", sas, "AZURE_STORAGE_ACCESS_KEY"
            )
        key = _check_key(key, "AZURE_STORAGE_ACCESS_KEY")
        return AzureAccess(endpoint, account, "key", key, "AZURE_STORAGE_ACCESS_KEY")
    if options.sas_token:
        sas = options.sas_token.strip().lstrip("?")
        return AzureAccess(endpoint, account, "sas", sas, "AZURE_STORAGE_SAS_TOKEN")
    return AzureAccess(endpoint, account, "anonymous", source="no credentials found")
