"""``python -m storage_init``."""

from storage_init.cli import main

raise SystemExit(main())
