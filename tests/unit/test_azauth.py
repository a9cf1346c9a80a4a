"""Which Azure endpoint and credential a URI gets (pure logic, no server)."""

from __future__ import annotations

import pytest

from storage_init.backends._azauth import parse_connection_string, resolve_access
from storage_init.config import AzureOptions, from_env
from storage_init.errors import ConfigError
from storage_init.uri import parse_uri

KEY = "a2V5" * 22  # valid base64
URL = "https://acct.blob.core.windows.net/c/m"


def test_connection_string_keeps_equals_in_values() -> None:
    """Keys end in '=='; SAS values contain '='; names are case-insensitive."""
    conn = parse_connection_string(
        f"AccountName=acct;ACCOUNTKEY={KEY}==;SharedAccessSignature=sv=1&sig=x%3D;"
    )
    assert conn == {
        "accountname": "acct",
        "accountkey": f"{KEY}==",
        "sharedaccesssignature": "sv=1&sig=x%3D",
    }


def test_malformed_connection_string_hides_its_value() -> None:
    with pytest.raises(ConfigError) as info:
        parse_connection_string("AccountName=acct;garbage-SECRET")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "uri", "kind", "source", "endpoint"),
    [
        pytest.param(
            AzureOptions(access_key=KEY, client_id="id"),
            f"{URL}?sv=1&sig=s",
            "sas",
            "the URL's SAS token",
            "https://acct.blob.core.windows.net",
            id="url-sas-first",
        ),
        pytest.param(
            AzureOptions(
                connection_string=f"AccountName=acct;AccountKey={KEY};"
                "BlobEndpoint=http://127.0.0.1:1/acct",
                client_id="id",
            ),
            URL,
            "key",
            "connection string",
            "http://127.0.0.1:1/acct",
            id="connection-string-for-this-account",
        ),
        pytest.param(
            AzureOptions(
                connection_string=f"AccountName=other;AccountKey={KEY}",
                access_key="sv=1&sig=s",
            ),
            URL,
            "sas",
            "AZURE_STORAGE_ACCESS_KEY",
            "https://acct.blob.core.windows.net",
            id="other-accounts-connection-string-ignored",
        ),
        pytest.param(
            AzureOptions(client_id="id", access_key=KEY),
            URL,
            "identity",
            "azure-identity",
            "https://acct.blob.core.windows.net",
            id="service-principal-before-key",
        ),
        pytest.param(
            AzureOptions(access_key=KEY),
            URL,
            "key",
            "AZURE_STORAGE_ACCESS_KEY",
            "https://acct.blob.core.windows.net",
            id="account-key",
        ),
        pytest.param(
            AzureOptions(sas_token="?sv=1&sig=s"),
            URL,
            "sas",
            "AZURE_STORAGE_SAS_TOKEN",
            "https://acct.blob.core.windows.net",
            id="sas-token",
        ),
        pytest.param(
            AzureOptions(),
            URL,
            "anonymous",
            "no credentials found",
            "https://acct.blob.core.windows.net",
            id="anonymous",
        ),
        pytest.param(
            AzureOptions(account_name="named", access_key=KEY),
            "az://c/m",
            "key",
            "AZURE_STORAGE_ACCESS_KEY",
            "https://named.blob.core.windows.net",
            id="az-with-account-name",
        ),
        pytest.param(
            AzureOptions(connection_string="UseDevelopmentStorage=true"),
            "az://c/m",
            "key",
            "connection string",
            "http://127.0.0.1:10000/devstoreaccount1",
            id="development-storage",
        ),
        pytest.param(
            AzureOptions(
                connection_string="DefaultEndpointsProtocol=https;AccountName=x;"
                "EndpointSuffix=core.chinacloudapi.cn;SharedAccessSignature=sv=1&sig=s"
            ),
            "az://c/m",
            "sas",
            "connection string",
            "https://x.blob.core.chinacloudapi.cn",
            id="endpoint-suffix",
        ),
    ],
)
def test_resolution_order(options, uri, kind, source, endpoint) -> None:
    """URL SAS, connection string, identity, access key, SAS token, anonymous."""
    access = resolve_access(options, parse_uri(uri))
    assert (access.kind, access.source, access.endpoint) == (kind, source, endpoint)


def test_az_without_account_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="names no account"):
        resolve_access(AzureOptions(), parse_uri("az://c/m"))


def test_access_key_neither_key_nor_sas() -> None:
    with pytest.raises(ConfigError, match="neither an account key"):
        resolve_access(AzureOptions(access_key="not base64!"), parse_uri(URL))


def test_environment_with_legacy_names() -> None:
    """KServe's variables, the legacy AZ_* names, and secrets kept out of repr."""
    options = from_env(
        {
            "AZ_CLIENT_ID": "cid",
            "AZ_TENANT_ID": "tid",
            "AZ_CLIENT_SECRET": "csecret",
            "AZURE_STORAGE_ACCESS_KEY": KEY,
            "AZURE_STORAGE_ACCOUNT": "acct",
        }
    ).azure
    assert (options.client_id, options.tenant_id, options.account_name) == (
        "cid",
        "tid",
        "acct",
    )
    assert options.client_secret == "csecret"
    assert "csecret" not in repr(options)
    assert KEY not in repr(options)
