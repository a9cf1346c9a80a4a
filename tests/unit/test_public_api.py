from __future__ import annotations

import subprocess
import sys

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

    def test_errors_are_builtin_compatible(self) -> None:
        """Not-found and denied errors are also FileNotFoundError/PermissionError."""
        assert issubclass(storage_init.ObjectNotFoundError, FileNotFoundError)
        assert issubclass(storage_init.AccessDeniedError, PermissionError)
