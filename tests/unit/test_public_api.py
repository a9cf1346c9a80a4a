from __future__ import annotations

import subprocess
import sys

import pytest

import storage_init


class TestPublicAPI:
    def test_all_names_exist(self) -> None:
        """Every name in __all__ is importable from the package."""
        for name in storage_init.__all__:
            assert hasattr(storage_init, name), name

    def test_all_is_sorted_tuple(self) -> None:
        """__all__ is a tuple, so it cannot be mutated by accident."""
        assert isinstance(storage_init.__all__, tuple)

    def test_no_sdk_import_at_startup(self) -> None:
        """Importing the package or the CLI loads no store SDK (lazy backends)."""
        code = (
            "import sys, storage_init, storage_init.cli; "
            "print(any(m.startswith(('aiobotocore', 'botocore', 'awscrt')) "
            "for m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "False"

    def test_version_loads_no_engine(self) -> None:
        """`--version` answers without importing anyio, asyncio or the engine: the
        package's names load on first use."""
        code = (
            "import sys\n"
            "from storage_init.cli import main\n"
            "try:\n"
            "    main(['--version'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = ('anyio', 'asyncio', 'storage_init.engine', 'storage_init.api')\n"
            "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip().splitlines()[-1] == "[]"

    def test_lazy_names_are_the_modules_own(self) -> None:
        """A name loaded on first use is the defining module's object."""
        from storage_init import api, errors

        assert storage_init.download is api.download
        assert storage_init.IntegrityError is errors.IntegrityError
        assert set(dir(storage_init)) >= set(storage_init.__all__)
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            _ = storage_init.nope  # type: ignore[attr-defined]

    def test_errors_are_builtin_compatible(self) -> None:
        """Not-found and denied errors are also FileNotFoundError/PermissionError."""
        assert issubclass(storage_init.ObjectNotFoundError, FileNotFoundError)
        assert issubclass(storage_init.AccessDeniedError, PermissionError)
