"""The manager reads USS (a walk of a process's page tables) rarely and a few at a time."""

from __future__ import annotations

from collections import Counter

from runtime.manager import uss_due


def test_every_process_has_its_uss_read_once_every_30_rounds_a_few_per_round() -> None:
    processes = 103  # a hundred workers, broker, aggregator, zygote
    per_process: Counter[int] = Counter()
    per_round: Counter[int] = Counter()
    for rounds in range(60):  # two minutes of one sampling round a second
        for i in range(processes):
            if uss_due(i, rounds):
                per_process[i] += 1
                per_round[rounds] += 1
    assert all(per_process[i] == 2 for i in range(processes))  # each, every 30 s
    assert max(per_round.values()) <= 4  # never a burst of walks in one round
