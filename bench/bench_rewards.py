"""Worst-case reward latency on adversarial completions (issue 14: parsing must be linear).

Scores each adversarial completion, built at the length cap ``MAX_ANSWER_CHARS`` (1,000,000
characters) and at the issue's 160 kB example, with every built-in reward, and prints the
seconds per reward call. Before the linear rewrite, ``<answer>`` repeated 20,000 times (160 kB,
never closed) took 18-23 s per call; quadratic growth would make the 1 MB case ~40 times worse.

    python bench/bench_rewards.py
"""

from __future__ import annotations

import time

from vrft.answers import MAX_ANSWER_CHARS
from vrft.rewards import classification, detection, grounding_giou


def adversarial(n: int) -> dict[str, str]:
    """Completions of about ``n`` characters that defeat naive regex scans."""
    return {
        "unclosed <answer> x n": "<answer>" * (n // 8),
        "unclosed <think> x n": "<think>" * (n // 7),
        "</think> x n inside think": "<think>" + "</think>" * (n // 8 - 2) + "<answer>",
        "answer of whitespace": "<think>.</think><answer>no objects" + " " * (n - 60) + "x</answer>",
        "fence of whitespace": "<think>.</think><answer>```" + " " * (n - 60) + "x</answer>",
        "open parens and digits": "<think>.</think><answer>" + "(1" * (n // 2 - 20) + "</answer>",
        "nested brackets": "<think>.</think><answer>"
        + "[" * (n // 2 - 20)
        + "]" * (n // 2 - 20)
        + "</answer>",
    }


def main() -> None:
    rewards = {
        "detection": (detection, {"solution_boxes": [[[0, 0, 10, 10]]]}),
        "classification": (classification, {"class_name": ["cat"]}),
        "grounding_giou": (grounding_giou, {"solution_box": [[0, 0, 10, 10]]}),
    }
    print(f"{'case':32s} {'chars':>9s} " + " ".join(f"{name:>15s}" for name in rewards))
    for size in (160_000, MAX_ANSWER_CHARS):
        for case, text in adversarial(size).items():
            times = []
            for reward, columns in rewards.values():
                start = time.perf_counter()
                reward([text], **columns)
                times.append(time.perf_counter() - start)
            print(f"{case:32s} {len(text):9d} " + " ".join(f"{t:14.3f}s" for t in times))


if __name__ == "__main__":
    main()
