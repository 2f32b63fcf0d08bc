#!/usr/bin/env python3
"""Restore a mailpipe pipeline backup: ``python scripts/restore.py FILE`` (``--help``)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from mailpipe.backup_cli import restore_main

if __name__ == "__main__":
    sys.exit(restore_main())
