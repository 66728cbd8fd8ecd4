"""Where a compiled request's time goes: route plans' stages for ``--stats``.

With ``--stats``, each plan reads the monotonic clock (``time.perf_counter_ns``, as the core's stages read
CLOCK_MONOTONIC: a vDSO call, where a CPU clock is a system call) between its steps and adds the difference
to its stage: reading and validating the arguments (parameters and body), solving the
dependencies, the endpoint, and the response (validating and serialising the return value, sending it,
background tasks, closing the exit stacks). The server prints them under the core's ``app`` stage, of which
they are a part, except that the response's stage also holds the core's ``send()`` and ``write`` stages, which
the plan's ``send`` calls run. With the loop on a core of its own, that is the loop thread's CPU time. A step
that awaits (a body arriving in pieces, an endpoint waiting for I/O) also counts what other requests run on
the thread meanwhile, and the time the thread waits.
"""

from __future__ import annotations

from time import perf_counter_ns

ARGUMENTS, DEPENDENCIES, ENDPOINT, RESPONSE = range(4)
STAGE_LABELS = (
    "plan: arguments (params, body)",
    "plan: dependencies",
    "plan: endpoint",
    "plan: response, sends included",
)

# Per stage: nanoseconds between laps, and how many times it was measured.
_ns = [0, 0, 0, 0]
_counts = [0, 0, 0, 0]


class StageClock:
    """One request's stage timer: :meth:`lap` charges the time since the previous lap to a stage."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = perf_counter_ns()

    def lap(self, stage: int) -> None:
        now = perf_counter_ns()
        _ns[stage] += now - self.last
        _counts[stage] += 1
        self.last = now


def stage_times() -> list[tuple[str, int, int]]:
    """(label, nanoseconds, times measured) for each plan stage, in this process."""
    return [(label, _ns[i], _counts[i]) for i, label in enumerate(STAGE_LABELS)]
