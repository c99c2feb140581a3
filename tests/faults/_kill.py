"""Killing a worker process at a chosen moment of its work."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path


async def kill_after_acks(args: list[str], acks: int, *, cwd: Path | None = None) -> list[bytes]:
    """Start ``args``; once it has printed ``ready`` and then ``acks`` acknowledgement lines,
    SIGKILL it. Returns every complete line it wrote after ``ready`` (those read before the
    kill and those still in the pipe); a line cut short by the kill was never fully written
    and does not count."""
    process = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(60):
            ready = await process.stdout.readline()
            if ready != b"ready\n":
                raise AssertionError(f"the worker did not start: {await process.stderr.read()!r}")
            while len(lines) < acks:
                line = await process.stdout.readline()
                if not line.endswith(b"\n"):
                    raise AssertionError(f"the worker died: {await process.stderr.read()!r}")
                lines.append(line)
            os.kill(process.pid, signal.SIGKILL)
            lines += (await process.stdout.read()).splitlines(keepends=True)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    return [line for line in lines if line.endswith(b"\n")]
