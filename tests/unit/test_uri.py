from __future__ import annotations

import pytest

from storage_init.errors import InvalidURIError
from storage_init.uri import parse_uri


class TestParseURI:
    @pytest.mark.parametrize(
        ("uri", "scheme", "bucket", "key"),
        [
            pytest.param("s3://b/k", "s3", "b", "k", id="object"),
            pytest.param("s3://bucket", "s3", "bucket", "", id="bucket"),
            pytest.param("s3://bucket/", "s3", "bucket", "", id="bucket-slash"),
            pytest.param("s3://b/a b/ü?x#y", "s3", "b", "a b/ü?x#y", id="verbatim-key"),
            pytest.param("gcs://b/m", "gs", "b", "m", id="gcs-alias"),
            pytest.param("abfs://c/m", "az", "c", "m", id="abfs-alias"),
            pytest.param(
                "https://h.example/p/m%20x.bin?sig=1",
                "https",
                "h.example",
                "p/m%20x.bin?sig=1",
                id="https-verbatim",
            ),
        ],
    )
    def test_parses(self, uri: str, scheme: str, bucket: str, key: str) -> None:
        """Schemes are canonical and S3 keys are kept byte for byte."""
        parsed = parse_uri(uri)
        assert (parsed.scheme, parsed.bucket, parsed.key) == (scheme, bucket, key)

    @pytest.mark.parametrize(
        "uri",
        [
            pytest.param("bucket/key", id="no-scheme"),
            pytest.param("s3://", id="no-bucket"),
            pytest.param("s3:///key", id="empty-bucket"),
            pytest.param("s3://b\x00/k", id="nul"),
            pytest.param("s3://b!d/k", id="bad-bucket"),
            pytest.param("http:///path", id="no-host"),
        ],
    )
    def test_rejects(self, uri: str) -> None:
        """Malformed URIs raise InvalidURIError, a ConfigError."""
        with pytest.raises(InvalidURIError):
            parse_uri(uri)

    @pytest.mark.parametrize(
        ("uri", "name"),
        [
            ("s3://b/models/llama/w.bin", "w.bin"),
            ("https://h/p/m%20x.bin?X-Amz-Signature=abc", "m x.bin"),
        ],
    )
    def test_name(self, uri: str, name: str) -> None:
        """A single object's file name: the last key segment, unquoted for URLs."""
        assert parse_uri(uri).name == name

    def test_url_without_file_name(self) -> None:
        """An http(s) URL must name a file."""
        with pytest.raises(InvalidURIError, match="names no file"):
            parse_uri("https://h.example/dir/")

    def test_display_hides_secrets(self) -> None:
        """The display form drops the query string and userinfo."""
        uri = parse_uri("https://user:pw@h.example/m.bin?X-Amz-Signature=abc")
        assert "abc" not in uri.display
        assert "pw" not in uri.display
        assert uri.display == "https://h.example/m.bin?REDACTED"

    def test_error_message_hides_secrets(self) -> None:
        """An invalid URI's error does not repeat its query string."""
        with pytest.raises(InvalidURIError) as info:
            parse_uri("s3://b!d/k?sig=topsecret")
        assert "topsecret" not in str(info.value)


class TestAzureURLs:
    @pytest.mark.parametrize(
        ("url", "endpoint", "container", "key"),
        [
            pytest.param(
                "https://acct.blob.core.windows.net/models/llama/w%20x.bin",
                "https://acct.blob.core.windows.net",
                "models",
                "llama/w x.bin",
                id="blob",
            ),
            pytest.param(
                "https://Acct.z23.blob.storage.azure.net/c",
                "https://acct.z23.blob.storage.azure.net",
                "c",
                "",
                id="dns-zone",
            ),
            pytest.param(
                "https://acct.blob.core.windows.net/$web/index.html",
                "https://acct.blob.core.windows.net",
                "$web",
                "index.html",
                id="special-container",
            ),
        ],
    )
    def test_account_urls_become_az(self, url, endpoint, container, key) -> None:
        """KServe's Azure Blob URL forms are az URIs that keep their endpoint."""
        uri = parse_uri(url)
        assert (uri.scheme, uri.endpoint, uri.bucket, uri.key) == (
            "az",
            endpoint,
            container,
            key,
        )

    def test_sas_is_kept_apart_and_hidden(self) -> None:
        """The SAS query is the URI's credential: kept, never displayed."""
        uri = parse_uri("https://a.blob.core.windows.net/c/m?sv=1&sig=SECRET")
        assert uri.query == "sv=1&sig=SECRET"
        assert "SECRET" not in uri.display
        assert "SECRET" not in repr(uri)
        assert uri.child("m/a.bin") == "https://a.blob.core.windows.net/c/m/a.bin"

    def test_store_separates_accounts(self) -> None:
        """Each account (and SAS) gets its own backend; az:// shares one."""
        one = parse_uri("https://a.blob.core.windows.net/c/m")
        two = parse_uri("https://b.blob.core.windows.net/c/m")
        assert one.store != two.store
        assert parse_uri("az://c/m").store == parse_uri("az://d/m").store == "az"

    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("https://a.blob.core.windows.net/", id="no-container"),
            pytest.param("https://a.blob.core.windows.net/b!d/m", id="bad-container"),
        ],
    )
    def test_rejects(self, url: str) -> None:
        with pytest.raises(InvalidURIError):
            parse_uri(url)

    def test_other_hosts_stay_http(self) -> None:
        """Only Azure's Blob hosts are Azure: lookalikes stay plain https."""
        uri = parse_uri("https://blob.core.windows.net.evil.example/c/m.bin")
        assert uri.scheme == "https"
