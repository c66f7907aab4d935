"""A module whose import ends the process (exit status 3), for tests/pipelines/test_forkserver.py:
preloaded by a fork server, it ends the server before it reads the first request."""

import os

os._exit(3)
