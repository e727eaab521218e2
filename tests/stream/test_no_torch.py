"""The stream processor talks to the model only through Triton: the worker process never loads torch."""

from __future__ import annotations

import subprocess
import sys


def test_worker_and_cli_import_without_torch() -> None:
    code = "import sys, stream.app, recstream.cli, recstream.stack; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
