#!/usr/bin/env python3
"""Back up one mailpipe pipeline from a live Redis: ``python scripts/backup.py FILE`` (``--help``)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from mailpipe.backup_cli import backup_main

if __name__ == "__main__":
    sys.exit(backup_main())
