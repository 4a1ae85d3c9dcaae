"""One progress line per step, with row counts and seconds; the numbers are kept for MLflow."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """Prints ``[stage] step: 1,234 rows, 0.8s`` lines and remembers them as metrics."""

    def __init__(self, stage: str, stream: Any = None) -> None:
        self.stage = stage
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self._last = self.started
        self.metrics: dict[str, float] = {}

    def step(self, name: str, rows: int | None = None, **extra: Any) -> None:
        now = time.monotonic()
        seconds = now - self._last
        self._last = now
        parts = [f"[{self.stage}] {name}:"]
        if rows is not None:
            parts.append(f"{rows:,} rows,")
            self.metrics[f"{name}_rows"] = rows
        parts.append(f"{seconds:.1f}s")
        for key, value in extra.items():
            is_count = isinstance(value, int) and not isinstance(value, bool)  # True stays True, not 1
            parts.append(f"{key}={value:,}" if is_count else f"{key}={value}")
        self.metrics[f"{name}_seconds"] = round(seconds, 3)
        print(" ".join(parts), file=self.stream, flush=True)

    def restart_clock(self) -> None:
        """Time the next step from now (a stream's idle wait before a micro-batch is not the batch's time)."""
        self._last = time.monotonic()

    def info(self, message: str) -> None:
        print(f"[{self.stage}] {message}", file=self.stream, flush=True)

    def done(self) -> float:
        total = time.monotonic() - self.started
        self.metrics["total_seconds"] = round(total, 3)
        print(f"[{self.stage}] done in {total:.1f}s", file=self.stream, flush=True)
        return total
