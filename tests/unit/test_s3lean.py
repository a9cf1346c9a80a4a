"""The lean S3 control plane's pure parts: endpoints, eligibility, listing XML."""

from __future__ import annotations

import pytest

from storage_init.backends._s3lean import LeanControl
from storage_init.backends._s3requests import first_requests, lean_credentials
from storage_init.backends._s3wire import parse_list_page
from storage_init.backends._sigv4 import Credentials
from storage_init.config import S3Options
from storage_init.uri import parse_uri

KEYS = Credentials("AKID", "SECRET")


@pytest.mark.parametrize(
    ("options", "bucket", "base"),
    [
        pytest.param(
            S3Options(region="eu-west-1"),
            "models",
            "https://models.s3.eu-west-1.amazonaws.com/",
            id="aws-virtual",
        ),
        pytest.param(
            S3Options(region="eu-west-1"),
            "my.dotted.bucket",
            "https://s3.eu-west-1.amazonaws.com/my.dotted.bucket/",
            id="aws-dots-path",
        ),
        pytest.param(
            S3Options(region="eu-west-1", addressing_style="path"),
            "models",
            "https://s3.eu-west-1.amazonaws.com/models/",
            id="aws-forced-path",
        ),
        pytest.param(
            S3Options(endpoint_url="http://minio.svc:9000/"),
            "models",
            "http://minio.svc:9000/models/",
            id="custom-path",
        ),
        pytest.param(
            S3Options(
                endpoint_url="https://s3.example.com", addressing_style="virtual"
            ),
            "models",
            "https://models.s3.example.com/",
            id="custom-virtual",
        ),
    ],
)
async def test_endpoints(options: S3Options, bucket: str, base: str) -> None:
    """Bucket URLs as botocore builds them for these cases (no request sent)."""
    control = LeanControl(options, KEYS, fetcher=None)  # type: ignore[arg-type]
    endpoint = await control.endpoint(bucket)
    assert endpoint.base == base
    assert endpoint.region == (options.region or "us-east-1")


async def test_anonymous_requests_are_unsigned() -> None:
    control = LeanControl(S3Options(region="us-east-1"), None, fetcher=None)  # type: ignore[arg-type]
    assert (await control.endpoint("b")).region is None


@pytest.mark.parametrize(
    ("options", "lean"),
    [
        pytest.param(
            S3Options(region="r", access_key_id="a", secret_access_key="s"),
            True,
            id="static-keys",
        ),
        pytest.param(
            S3Options(endpoint_url="http://h", anonymous=True), True, id="anon"
        ),
        pytest.param(S3Options(region="r"), False, id="credential-chain"),
        pytest.param(
            S3Options(access_key_id="a", secret_access_key="s"), False, id="no-region"
        ),
        pytest.param(
            S3Options(region="r", access_key_id="a", secret_access_key="s", sdk=True),
            False,
            id="forced-sdk",
        ),
        pytest.param(
            S3Options(
                region="r",
                access_key_id="a",
                secret_access_key="s",
                use_accelerate=True,
            ),
            False,
            id="accelerate",
        ),
    ],
)
def test_lean_only_where_equivalent(options: S3Options, lean: bool) -> None:
    """The SDK takes whatever only it resolves."""
    assert lean_credentials(options)[0] is lean


def test_sdk_switches_from_the_environment() -> None:
    from storage_init.config import from_env

    base = {
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_SESSION_TOKEN": "t",
        "AWS_DEFAULT_REGION": "r",
    }
    options = from_env(base).s3
    assert lean_credentials(options) == (True, Credentials("a", "s", "t"))
    for name in ("AWS_PROFILE", "AWS_USE_FIPS_ENDPOINT", "STORAGE_INIT_S3_SDK"):
        assert from_env({**base, name: "true"}).s3.sdk, name


def test_list_page_decodes_keys_and_follows_truncation() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>m%2F</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <Contents><Key>m/a+b%C3%BC.bin</Key><Size>5</Size><ETag>&quot;e1&quot;</ETag></Contents>
  <Contents><Key>m/%2Bplus</Key><Size>0</Size><ETag>"e2-3"</ETag></Contents>
  <NextContinuationToken>tok/1==</NextContinuationToken>
</ListBucketResult>"""
    infos, token = parse_list_page(body)
    assert [(i.key, i.size, i.etag) for i in infos] == [
        ("m/a b\u00fc.bin", 5, "e1"),
        ("m/+plus", 0, "e2-3"),
    ]
    assert token == "tok/1=="


def test_list_page_last_page_and_wrong_document() -> None:
    last = b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"
    assert parse_list_page(last) == ([], None)
    with pytest.raises(ValueError, match="ListBucketResult"):
        parse_list_page(b"<Error><Code>x</Code></Error>")


def test_list_page_raw_keys_and_objects_without_size() -> None:
    """Without EncodingType keys are taken as they are; an object needs a size."""
    raw = (
        b"<ListBucketResult><Contents><Key>a%2B+b</Key><Size>3</Size></Contents>"
        b"<IsTruncated>true</IsTruncated></ListBucketResult>"
    )
    infos, token = parse_list_page(raw)
    assert [(i.key, i.size, i.etag) for i in infos] == [("a%2B+b", 3, None)]
    assert token is None  # truncated, yet no token: nothing more to ask for
    for broken in (b"<Key>k</Key>", b"<Size>1</Size>"):
        body = (
            b"<ListBucketResult><Contents>" + broken + b"</Contents></ListBucketResult>"
        )
        with pytest.raises(ValueError, match="without Key or Size"):
            parse_list_page(body)


@pytest.mark.parametrize(
    ("key", "head", "prefix"),
    [
        pytest.param("models/llama", True, "models%2Fllama%2F", id="object-or-prefix"),
        pytest.param("models/llama/", False, "models%2Fllama%2F", id="prefix"),
        pytest.param("", False, "", id="bucket"),
    ],
)
def test_first_requests_are_the_control_planes_first(
    key: str, head: bool, prefix: str
) -> None:
    """What the CLI sends ahead: the HEAD only for a possible object, then page one."""
    options = S3Options(
        endpoint_url="http://127.0.0.1:9000",
        access_key_id="AKID",
        secret_access_key="SECRET",
        page_size=1000,
    )
    requests = first_requests(options, parse_uri(f"s3://b/{key}"))
    methods = [method for method, _, _ in requests]
    assert methods == (["HEAD", "GET"] if head else ["GET"])
    if head:
        _, url, headers = requests[0]
        assert url == f"http://127.0.0.1:9000/b/{key}"
        assert headers["x-amz-checksum-mode"] == "ENABLED"
        assert "Credential=AKID/" in headers["Authorization"]
    _, url, headers = requests[-1]
    assert url == (
        "http://127.0.0.1:9000/b/?encoding-type=url&list-type=2"
        f"&max-keys=100&prefix={prefix}"
    )
    assert "Authorization" in headers


def test_no_first_requests_where_the_sdk_serves() -> None:
    no_static_keys = S3Options(region="r")
    assert first_requests(no_static_keys, parse_uri("s3://b/k")) == []
