"""Peer: kserve-storage, called the way its initializer-entrypoint calls it.

python kserve_download.py SRC DEST
"""

import logging
import sys

from kserve_storage import Storage


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    Storage.download_files([sys.argv[1]], [sys.argv[2]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
