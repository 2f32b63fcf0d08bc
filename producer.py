#!/usr/bin/env python3
"""Run the mailpipe producer: ``python producer.py`` (``--help`` lists every option)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from mailpipe.producer.main import main

if __name__ == "__main__":
    sys.exit(main())
