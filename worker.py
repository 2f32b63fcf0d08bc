#!/usr/bin/env python3
"""Run a mailpipe worker: ``python worker.py --consumer NAME`` (``--help`` lists every option)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from mailpipe.worker_main import main

if __name__ == "__main__":
    sys.exit(main())
