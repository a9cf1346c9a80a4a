from __future__ import annotations

import hmac

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials

from storage_init.backends._sigv4 import (
    Credentials,
    _KeyedSha256,
    object_url,
    sign_get,
    sign_request,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _botocore(
    url: str,
    region: str,
    creds: Credentials,
    extra: dict[str, str],
    method: str = "GET",
):
    """Sign the same request with botocore's S3 signer, at the time NOW."""
    request = AWSRequest(
        method=method,
        url=url,
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", **extra},
    )
    # botocore signs UNSIGNED-PAYLOAD when the client turns payload signing off.
    request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    signer = S3SigV4Auth(
        BotoCredentials(creds.access_key, creds.secret_key, creds.token), "s3", region
    )
    signer.add_auth(request)
    return request.headers["Authorization"]


class TestSignGet:
    @pytest.mark.parametrize(
        ("url", "region", "token", "extra"),
        [
            pytest.param(
                "https://bucket.s3.us-east-1.amazonaws.com/model/w.bin",
                "us-east-1",
                None,
                {},
                id="virtual-host",
            ),
            pytest.param(
                "http://127.0.0.1:9000/bucket/" + "a%20b/%C3%BC%2B~x.json",
                "eu-west-1",
                "SESSIONTOKEN",
                {"x-amz-checksum-mode": "ENABLED"},
                id="path-style-port-token-unicode",
            ),
        ],
    )
    def test_matches_botocore(self, url, region, token, extra, monkeypatch) -> None:
        """Our Authorization header equals botocore's for the same request."""
        import datetime

        import botocore.auth

        monkeypatch.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(
                tzinfo=None
            ),
        )
        creds = Credentials(
            "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
        )
        ours = sign_get(url, region, creds, extra, now=NOW)["Authorization"]
        assert ours == _botocore(url, region, creds, extra)

    @pytest.mark.parametrize(
        ("method", "url"),
        [
            pytest.param(
                "GET",
                "http://127.0.0.1:9000/bucket?list-type=2&prefix=m%20x%2F&max-keys=1000"
                "&encoding-type=url&continuation-token=1%2Fab%3D%3D",
                id="list-query",
            ),
            pytest.param(
                "HEAD",
                "https://b.s3.eu-west-1.amazonaws.com/k%20y.bin?partNumber=3",
                id="head-part",
            ),
        ],
    )
    def test_requests_with_queries_match_botocore(self, method, url, monkeypatch):
        """Listing and HEAD requests, query strings included, sign as botocore's."""
        import datetime

        import botocore.auth

        monkeypatch.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda: datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(
                tzinfo=None
            ),
        )
        creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        ours = sign_request(method, url, "eu-west-1", creds, {}, now=NOW)
        assert ours["Authorization"] == _botocore(url, "eu-west-1", creds, {}, method)

    def test_object_url_encoding(self) -> None:
        """Keys are percent-encoded as S3 expects, slashes and tildes kept."""
        assert object_url("http://h/b/", "a b/ü+~.json") == (
            "http://h/b/a%20b/%C3%BC%2B~.json"
        )

    def test_credentials_repr_hides_secrets(self) -> None:
        """Credentials never print their keys."""
        assert "SECRET" not in repr(Credentials("AKID", "SECRET", "TOKEN"))


@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
def test_keyed_sha256_is_hmac(key_size: int) -> None:
    key = bytes(range(256))[:key_size]
    keyed = _KeyedSha256(key)
    for message in (b"", b"AWS4-HMAC-SHA256\n20231114T221320Z", bytes(1000)):
        assert keyed.hexdigest(message) == hmac.digest(key, message, "sha256").hex()
