"""Hostile experiment configs through OmegaConf alone and through vrft's config mechanism.

What docs/configuration.md ("What is refused") quotes to explain why vrft checks values itself before
OmegaConf merges them: each case is a YAML file (and overrides) for the whole experiment, loaded

* the way torchtune and EasyR1 do: ``OmegaConf.merge(OmegaConf.structured(ExperimentConfig),
  OmegaConf.load(file), OmegaConf.from_dotlist(overrides))`` then ``OmegaConf.to_object``;
* with :func:`vrft.experiment.load_experiment`.

A case passes when loading fails with a one-line message that names the file and the key (an
override's syntax error names the override). The cases are the library-level ones of the test
suite's hostile-config tests (tests/test_config.py, tests/test_cli.py, tests/train/test_config.py,
tests/data/test_hostile_input.py), written against the experiment; range checks (``learning_rate:
0``) are the dataclasses' own ``validate()`` under either loader and are left out.

    python bench/bench_config_errors.py            # a Markdown table and a summary line
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

# (YAML text, overrides, what a good message names besides being one line; {file}: the file's path)
CASES: list[tuple[str, list[str], list[str]]] = [
    ("grpo:\n  num_generatoins: 4\n", [], ["{file}", "grpo.num_generatoins"]),
    ("grpo:\n  lora: {enabled: true, rr: 4}\n", [], ["{file}", "grpo.lora.rr"]),
    ("grpo:\n  max_steps: many\n", [], ["{file}", "grpo.max_steps"]),
    ("grpo:\n  lora: {enabled: true, r: 1.5}\n", [], ["{file}", "grpo.lora.r"]),
    ('grpo:\n  max_steps: "25"\n', [], ["{file}", "grpo.max_steps"]),
    ("grpo:\n  max_steps: true\n", [], ["{file}", "grpo.max_steps"]),
    ("grpo:\n  max_steps: null\n", [], ["{file}", "grpo.max_steps"]),
    ("pipeline:\n  image_tag: 1.10\n", [], ["{file}", "pipeline.image_tag"]),
    ("pipeline:\n  shared_pvc: no\n", [], ["{file}", "pipeline.shared_pvc"]),
    ("grpo:\n  lora: {enabled: 2}\n", [], ["{file}", "grpo.lora.enabled"]),
    ("evaluate:\n  detection_mode: gated\n", [], ["{file}", "evaluate.detection_mode"]),
    ("experiment:\n  shots: [1, x]\n", [], ["{file}", "experiment.shots[1]"]),
    ("experiment:\n  shots: 4\n", [], ["{file}", "experiment.shots"]),
    ("grpo: 3\n", [], ["{file}", "grpo"]),
    ("dataset:\n  aliases: {cat: kitty}\n", [], ["{file}", "dataset.aliases.cat"]),
    ("grpo:\n  max_steps: 2024-01-01\n", [], ["{file}", "grpo.max_steps"]),
    ("grpo:\n  max_steps: 5\n  beta: 0.1\n  max_steps: 500\n", [], ["{file}", "max_steps", "line 4"]),
    ("grpo: {}\nsft: {}\ngrpo: {max_steps: 5}\n", [], ["{file}", "grpo", "line 3"]),
    ("", [], ["{file}", "empty"]),
    ("# only a comment\n", [], ["{file}", "empty"]),
    ("- 1\n", [], ["{file}", "mapping"]),
    ("grpo: [1\n", [], ["{file}", "line 2"]),
    ("grpo: " + "[" * 5000 + "]" * 5000 + "\n", [], ["{file}"]),
    ("grpo:\n  beta: .nan\n", [], ["{file}", "grpo.beta"]),
    ("dataset:\n  box_tolerance: .inf\n", [], ["{file}", "dataset.box_tolerance"]),
    ("grpo:\n  max_steps: 99999999999999999999999999999\n", [], ["{file}", "grpo.max_steps"]),
    ("grpo:\n  beta: 1" + "0" * 400 + "\n", [], ["{file}", "grpo.beta"]),
    ("experiment: {name: x}\n", ["grpo.max_steps"], ["grpo.max_steps", "KEY=VALUE"]),
    ("experiment: {name: x}\n", ["=3"], ["'=3'", "empty key"]),
    ("experiment: {name: x}\n", ["grpo.beta=.nan"], ["grpo.beta"]),
    ("experiment: {name: x}\n", ["grpo.beta=1e999"], ["grpo.beta"]),
    ("experiment: {name: x}\n", ["grpo.max_steps=" + "9" * 30], ["grpo.max_steps"]),
    ("experiment: {name: x}\n", ["experiment.tags={a: 1, a: 2}"], ["experiment.tags", "twice"]),
    ("experiment: {name: x}\n", ["grpo.num_generatoins=4"], ["grpo.num_generatoins"]),
]


def _omegaconf_alone(path: Path, overrides: list[str]) -> tuple[bool, str]:
    from omegaconf import OmegaConf

    from vrft.experiment import ExperimentConfig

    try:
        merged = OmegaConf.merge(
            OmegaConf.structured(ExperimentConfig), OmegaConf.load(path), OmegaConf.from_dotlist(overrides)
        )
        OmegaConf.to_object(merged)
    except Exception as exc:  # noqa: BLE001 - whatever it raises is what is measured
        return True, f"{type(exc).__name__}: {exc}"
    return False, "accepted"


def _vrft(path: Path, overrides: list[str]) -> tuple[bool, str]:
    from vrft.config import ConfigError
    from vrft.experiment import load_experiment

    try:
        load_experiment(path, overrides)
    except ConfigError as exc:
        return True, str(exc)
    return False, "accepted"


def _verdict(path: Path, refused: bool, message: str, names: list[str]) -> str:
    if not refused:
        return "accepted"
    if "\n" in message:
        return "several lines"
    missing = [n for n in names if n.replace("{file}", str(path)) not in message]
    return "good" if not missing else f"lacks {', '.join(missing)}"


def main() -> int:
    sys.setrecursionlimit(2000)
    rows, good = [], {"omegaconf": 0, "vrft": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exp.yaml"
        for text, overrides, names in CASES:
            path.write_text(text)
            shown = " ⏎ ".join(text.strip().splitlines())[:44] or "(empty)"
            row = [f"`{shown}`" + (f" + `{' '.join(overrides)[:44]}`" if overrides else "")]
            for name, load in (("omegaconf", _omegaconf_alone), ("vrft", _vrft)):
                refused, message = load(path, overrides)
                verdict = _verdict(path, refused, message, names)
                good[name] += verdict == "good"
                first = message.splitlines()[0] if message else ""
                row.append(
                    verdict
                    if verdict == "accepted"
                    else f"{verdict}: {first.replace(str(path), 'exp.yaml')[:64]}"
                )
            rows.append(row)
    print("| case | OmegaConf alone | vrft |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    print(
        f"\n{len(CASES)} cases: one-line error naming file and key: OmegaConf alone {good['omegaconf']}, "
        f"vrft {good['vrft']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
