"""Run one script under several Keras backends at once, each in a fresh process, and collect the
largest difference each reports (a line `MAXDIFF <backend> <value>` on its standard output)."""

import os
import subprocess
import sys


def max_differences(script, arguments_by_backend: dict[str, list[str]], timeout: float = 600) -> dict[str, float]:
    """{backend: the MAXDIFF value that `script` printed under it}; fails the calling test when a
    process exits non-zero, prints no MAXDIFF line, or ran under another backend."""
    processes = {
        backend: subprocess.Popen(
            [sys.executable, str(script), *arguments],
            env=dict(os.environ, KERAS_BACKEND=backend),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend, arguments in arguments_by_backend.items()
    }
    differences = {}
    for backend, process in processes.items():
        stdout, stderr = process.communicate(timeout=timeout)
        lines = [line.split() for line in stdout.splitlines() if line.startswith("MAXDIFF")]
        assert process.returncode == 0 and lines, f"{backend}: {stderr[-2000:]}"
        _, reported_backend, difference = lines[-1]
        assert reported_backend == backend
        differences[backend] = float(difference)
    return differences
