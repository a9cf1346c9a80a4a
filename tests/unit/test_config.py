from __future__ import annotations

import json

import pytest

from storage_init.config import (
    S3Options,
    TransferConfig,
    from_env,
    parse_size,
)
from storage_init.errors import ConfigError
from storage_init.models import MiB, VerifyMode


class TestParseSize:
    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("1048576", MiB),
            ("64MiB", 64 * MiB),
            ("64M", 64 * MiB),
            ("1.5GiB", 3 << 29),
            ("512k", 512 << 10),
            (" 2 g ", 2 << 30),
        ],
    )
    def test_sizes(self, text: str, value: int) -> None:
        """Plain bytes and binary units parse."""
        assert parse_size(text) == value

    @pytest.mark.parametrize("text", ["", "abc", "-1", "10X", "1e999"])
    def test_rejects(self, text: str) -> None:
        """Anything else is a ConfigError."""
        with pytest.raises(ConfigError):
            parse_size(text)


class TestTransferConfig:
    def test_memory_bound_formula(self) -> None:
        """The stated bound is (requests + hashers) chunks + socket buffers,
        and a connection buffer per small file's GET."""
        cfg = TransferConfig(
            max_concurrency=4,
            small_file_concurrency=3,
            io_concurrency=2,
            chunk_size=MiB,
        )
        assert cfg.memory_bound == 6 * MiB + 4 * (2 * MiB + 256 * 1024) + 3 * MiB
        small = TransferConfig(small_file_concurrency=2, chunk_size=64 * 1024)
        assert (
            small.memory_bound
            - TransferConfig(
                small_file_concurrency=1, chunk_size=64 * 1024
            ).memory_bound
            == 256 * 1024
        )  # a connection's buffer, at least

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"part_size": MiB},
            {"chunk_size": 1024},
            {"chunk_size": 64 * MiB},
            {"max_concurrency": 0},
            {"small_file_concurrency": 0},
            {"max_concurrency": 200, "small_file_concurrency": 57},
            {"io_concurrency": 0},
            {"stall_timeout": 0},
        ],
    )
    def test_validation(self, kwargs: dict[str, int]) -> None:
        """Out-of-range knobs raise ConfigError at construction."""
        with pytest.raises(ConfigError):
            TransferConfig(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "budget", [4 * MiB, 6 * MiB, 12 * MiB, 20 * MiB, 512 * MiB]
    )
    def test_memory_budget(self, budget: int) -> None:
        """A memory budget yields a config whose bound fits in it."""
        assert TransferConfig().with_memory_budget(budget).memory_bound <= budget

    def test_budget_takes_small_files_concurrency_first(self) -> None:
        """Down to the ranges' concurrency, small files' GETs give way before the
        chunk size does (a budget that fitted before they had their own limit
        keeps its chunks)."""
        cfg = TransferConfig().with_memory_budget(24 * MiB)
        assert (cfg.chunk_size, cfg.max_concurrency) == (256 * 1024, 8)
        assert 8 <= cfg.small_file_concurrency < 64

    def test_budget_too_small(self) -> None:
        """A budget below one request's needs is refused."""
        with pytest.raises(ConfigError):
            TransferConfig().with_memory_budget(4 * MiB - 1)


class TestProxyConfig:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("https://s3.amazonaws.com/b/k", "http://p:3128"),
            ("http://minio.local:9000/b", "http://hp:8080"),
            ("https://bucket.internal.example/k", None),
            ("https://internal.example/k", None),
            ("http://127.0.0.1:9000/b", None),
        ],
    )
    def test_for_url(self, url: str, expected: str | None) -> None:
        """NO_PROXY hosts and domain suffixes bypass the scheme's proxy."""
        cfg = from_env(
            {
                "HTTPS_PROXY": "http://p:3128",
                "http_proxy": "http://hp:8080",
                "NO_PROXY": ".internal.example, 127.0.0.1",
            }
        ).proxy
        assert cfg.for_url(url) == expected

    def test_proxy_credentials_not_in_repr(self) -> None:
        """A proxy URL with credentials never shows in the repr."""
        cfg = from_env({"HTTPS_PROXY": "http://user:pw@p:3128"})
        assert "pw" not in repr(cfg)


class TestFromEnv:
    def test_defaults(self) -> None:
        """An empty environment gives the defaults."""
        cfg = from_env({})
        assert cfg.s3 == S3Options()
        assert cfg.transfer == TransferConfig()
        assert cfg.allow_patterns == ()

    def test_kserve_s3_variables(self) -> None:
        """KServe's S3 variables map onto S3Options."""
        cfg = from_env(
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                "AWS_DEFAULT_REGION": "eu-west-1",
                "S3_VERIFY_SSL": "0",
                "awsAnonymousCredential": "true",
                "S3_USER_VIRTUAL_BUCKET": "true",
                "S3_USE_ACCELERATE": "true",
                "S3_CONNECT_TIMEOUT": "5",
                "S3_READ_TIMEOUT": "7",
                "S3_MAX_ATTEMPTS": "9",
            }
        ).s3
        assert cfg.endpoint_url == "http://127.0.0.1:9000"
        assert cfg.region == "eu-west-1"
        assert not cfg.verify_ssl
        assert cfg.anonymous
        assert cfg.addressing_style == "virtual"
        assert cfg.use_accelerate
        assert (cfg.connect_timeout, cfg.read_timeout, cfg.max_attempts) == (5, 7, 9)

    def test_ca_bundle_sources(self) -> None:
        """AWS_CA_BUNDLE wins over the KServe CA configmap mount."""
        mount = {"CA_BUNDLE_CONFIGMAP_NAME": "ca", "CA_BUNDLE_VOLUME_MOUNT_POINT": "/c"}
        assert from_env(mount).s3.ca_bundle == "/c/cabundle.crt"
        assert from_env({**mount, "AWS_CA_BUNDLE": "/x.pem"}).s3.ca_bundle == "/x.pem"

    def test_storage_config_and_override(self) -> None:
        """STORAGE_CONFIG keys apply, STORAGE_OVERRIDE_CONFIG overrides them."""
        spec = {
            "type": "s3",
            "endpoint_url": "http://a",
            "access_key_id": "AKIA",
            "secret_access_key": "SECRET",
            "region": "r1",
            "verify_ssl": "false",
        }
        cfg = from_env(
            {
                "STORAGE_CONFIG": json.dumps(spec),
                "STORAGE_OVERRIDE_CONFIG": json.dumps({"endpoint_url": "http://b"}),
                "AWS_ENDPOINT_URL": "http://env",
            }
        ).s3
        assert cfg.endpoint_url == "http://b"
        assert cfg.access_key_id == "AKIA"
        assert cfg.region == "r1"
        assert not cfg.verify_ssl
        assert "SECRET" not in repr(cfg)

    def test_bad_storage_config_does_not_echo_it(self) -> None:
        """Invalid STORAGE_CONFIG JSON is a ConfigError that quotes nothing of it."""
        with pytest.raises(ConfigError) as info:
            from_env({"STORAGE_CONFIG": '{"secret_access_key": "hunter2"'})
        assert "hunter2" not in str(info.value)

    @pytest.mark.parametrize(
        ("raw", "patterns"),
        [
            ('["*.json", "tokenizer*"]', ("*.json", "tokenizer*")),
            ('"*.json"', ("*.json",)),
            ("*.json, *.txt", ("*.json", "*.txt")),
            ("", ()),
        ],
    )
    def test_patterns(self, raw: str, patterns: tuple[str, ...]) -> None:
        """Pattern variables accept a JSON list, a JSON string or CSV."""
        assert from_env({"STORAGE_ALLOW_PATTERNS": raw}).allow_patterns == patterns

    def test_storage_init_variables(self) -> None:
        """STORAGE_INIT_* variables set the transfer knobs."""
        cfg = from_env(
            {
                "STORAGE_INIT_PART_SIZE": "16MiB",
                "STORAGE_INIT_CONCURRENCY": "3",
                "STORAGE_INIT_VERIFY": "strict",
                "STORAGE_INIT_MEMORY_BUDGET": "8MiB",
            }
        ).transfer
        assert cfg.part_size == 16 * MiB
        assert cfg.verify is VerifyMode.STRICT
        assert cfg.memory_bound <= 8 * MiB
        small = from_env({"STORAGE_INIT_SMALL_FILE_CONCURRENCY": "5"}).transfer
        assert (small.small_file_concurrency, small.max_concurrency) == (5, 8)
        assert small.connections == 5 + 8 + 4

    @pytest.mark.parametrize(
        ("value", "splice"), [(None, False), ("0", False), ("1", True), ("true", True)]
    )
    def test_splice_switch(self, value: str | None, splice: bool) -> None:
        """Splicing is off unless STORAGE_INIT_SPLICE turns it on."""
        env = {} if value is None else {"STORAGE_INIT_SPLICE": value}
        assert from_env(env).transfer.splice is splice

    @pytest.mark.parametrize(
        "env",
        [
            {"S3_MAX_ATTEMPTS": "many"},
            {"S3_READ_TIMEOUT": "soon"},
            {"STORAGE_INIT_VERIFY": "maybe"},
            {"STORAGE_CONFIG": "[1]"},
        ],
    )
    def test_invalid_values(self, env: dict[str, str]) -> None:
        """Invalid variable values raise ConfigError."""
        with pytest.raises(ConfigError):
            from_env(env)
