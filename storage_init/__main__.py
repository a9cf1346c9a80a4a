"""``python -m storage_init``."""

from storage_init.cli import run

run()
