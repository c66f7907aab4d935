"""Tables, paper mapping and the regression rule on hand-made run records (no MLflow needed)."""

from __future__ import annotations

import pytest

from vrft.config import ConfigError, from_dict
from vrft.report import ReportConfig, RunRecord, RunTags, build_tables, compare_runs, paper_table
from vrft.report.paper import TABLES
from vrft.report.regression import previous_run
from vrft.report.tables import build_table, markdown_table

_clock = iter(range(1_000, 10_000_000, 1_000))


def run(
    method: str,
    shots: int | None,
    metrics: dict[str, float],
    *,
    config: str = "cfg",
    status: str = "FINISHED",
    task: str = "detection",
    **tags: str,
) -> RunRecord:
    record_tags = RunTags(method=method, config=config, model="m", shots=shots).as_tags("evaluate")
    record_tags.update(task=task, **tags)
    return RunRecord(
        f"{config}-{method}-{shots}-{next(_clock)}", "0", next(_clock), status, record_tags, metrics
    )


def test_lvis_table_maps_underscored_categories_and_a_single_paper_shot_count() -> None:
    runs = [
        run("base", None, {"mAP": 0.05, "AP/horse_buggy": 0.02, "AP/die": 0.01}, paper_table="table4"),
        run("sft", 10, {"mAP": 0.10, "AP/horse_buggy": 0.07, "AP/die": 0.08}, paper_table="table4"),
        run("rft", 10, {"mAP": 0.20, "AP/horse_buggy": 0.09, "AP/die": 0.19}, paper_table="table4"),
    ]
    table = build_table(runs, ReportConfig())
    assert [(c.label, c.paper) for c in table.columns] == [
        ("mAP", "mAP"),
        ("horse_buggy", "horse buggy"),
        ("die", "die"),
    ]
    delta = table.row("delta", 10)
    assert delta.values["mAP"] == pytest.approx(10.0) and delta.paper["mAP"] == pytest.approx(19.4 - 10.0)
    assert table.row("sft", 10).paper["AP/horse_buggy"] == 7.0


def test_classification_table2_uses_the_dataset_column_and_drops_too_many_classes() -> None:
    per_class = {f"accuracy/class {i}": 0.5 for i in range(20)}
    runs = [
        run("base", None, {"accuracy": 0.5, **per_class}, task="classification"),
        run("rft", 4, {"accuracy": 0.7, **per_class}, task="classification"),
    ]
    config = from_dict(
        ReportConfig, {"paper_table": "table2", "paper_column": "Flower102", "max_category_columns": 8}
    )
    table = build_table(runs, config)
    assert [(c.key, c.paper) for c in table.columns] == [("accuracy", "Flower102")]
    assert any("20 per-category columns left out" in note for note in table.notes)
    assert table.notes[0].startswith("Protocol: accuracy = the authors' rule")
    assert table.row("rft", 4).paper["accuracy"] == 71.4 and table.row("base", None).paper["accuracy"] == 54.8
    assert table.row("delta", 4) is None  # no SFT run at 4 shots: no Δ row
    assert "| RFT | 4 | 70.0 | 71.4 |" in markdown_table(table)


def test_ovd_table7_group_columns_and_runs_without_shots() -> None:
    metrics = {"mAP": 0.2, "mAP/novel": 0.3, "mAP/base": 0.1}
    runs = [
        run(m, None, {k: v * (1 + i) for k, v in metrics.items()}, paper_table="table7")
        for i, m in enumerate(("base", "sft", "rft"))
    ]
    table = build_table(runs, ReportConfig())
    assert [(c.key, c.paper) for c in table.columns] == [
        ("mAP", "mAP all"),
        ("mAP/base", "mAP base"),
        ("mAP/novel", "mAP novel"),
    ]
    assert [(r.method, r.shots) for r in table.rows] == [
        ("base", None),
        ("sft", None),
        ("rft", None),
        ("delta", None),
    ]
    assert table.row("delta", None).paper["mAP/novel"] == pytest.approx(31.3 - 13.6)


def test_newest_finished_run_wins_and_groups_become_tables() -> None:
    old = run("rft", 2, {"mAP": 0.30})
    new = run("rft", 2, {"mAP": 0.40})
    failed = run("rft", 2, {"mAP": 0.90}, status="FAILED")
    other = run("base", None, {"mAP": 0.1}, config="other")
    tables = build_tables([old, new, failed, other], ReportConfig())
    assert [t.config for t in tables] == ["cfg", "other"]
    assert tables[0].row("rft", 2).values["mAP"] == pytest.approx(40.0)
    assert tables[0].row("rft", 2).run_id == new.run_id
    assert build_tables([old, other], from_dict(ReportConfig, {"configs": ["other"]}))[0].config == "other"


def test_regression_threshold_in_points() -> None:
    before = run("rft", 4, {"mAP": 0.400, "AP/cat": 0.500, "AP/dog": 0.300, "timing/images_per_second": 10.0})
    after = run("rft", 4, {"mAP": 0.391, "AP/cat": 0.480, "AP/dog": 0.350, "timing/images_per_second": 1.0})
    result = compare_runs(after, before, threshold_points=1.0)
    assert result.status == "regressed" and result.previous_run_id == before.run_id
    assert [(r.metric, round(r.drop_points, 6)) for r in result.regressions] == [("AP/cat", 2.0)]  # mAP: -0.9
    assert "timing/images_per_second" not in result.compared
    assert compare_runs(after, before, threshold_points=2.5).status == "ok"
    assert compare_runs(after, before, threshold_points=0.5, metrics=["AP/dog"]).status == "ok"
    assert compare_runs(after, None, threshold_points=1.0).status == "no_previous"
    # "previous" = same series, finished, started earlier.
    unrelated = run("sft", 4, {"mAP": 0.9})
    assert previous_run(after, [before, unrelated, after]) is before
    assert previous_run(before, [before, after]) is None


def test_paper_lookup_and_config_validation() -> None:
    assert paper_table("Table 3") is TABLES["table3"] and paper_table("8").key == "table8"
    for table in TABLES.values():  # every row complete, every value a percentage
        assert all(
            len(values) == len(table.columns) and all(0 <= v <= 100 for v in values.values())
            for values in table.rows.values()
        )
    assert TABLES["table2"].value("Qwen2-VL-2B", "rft", 4, "Average") == pytest.approx(
        sum(
            TABLES["table2"].value("Qwen2-VL-2B", "rft", 4, c)
            for c in ("Flower102", "Pets37", "FGVC", "Cars196")
        )
        / 4,
        abs=0.05,
    )
    with pytest.raises(ValueError, match="table9"):
        paper_table("table9")
    with pytest.raises(ConfigError, match="paper_column"):
        from_dict(ReportConfig, {"paper_table": "table2", "paper_column": "Flowers"})
    with pytest.raises(ValueError, match="method"):
        RunTags(method="grpo", config="c", model="m").validate()


# -- honest labels and refusals (issue 22, point 8) ------------------------------------------------

AUTHORS_CLS = {  # the protocol a paper-mode Table 2 evaluation records
    "protocol.system_prompt": "none",
    "protocol.max_new_tokens": "1024",
    "protocol.max_pixels": "12845056",
    "protocol.image_placeholder": "yes",
    "protocol.class_names": "authors",
    "protocol.test_list": "paper:test_lists/stanford_cars.csv",
}


def cls_run(method: str, shots: int | None, accuracy: float, **tags: str) -> RunRecord:
    training = {"rft": "reward:classification_containment", "sft": "sft:vrft"}.get(method, "")
    merged = {
        **AUTHORS_CLS,
        "eval_split_sha256": "split-a",
        **({"training": training} if training else {}),
        **tags,
    }
    return run(method, shots, {"accuracy": accuracy}, task="classification", paper_table="table2", **merged)


def test_paper_columns_name_table_row_and_column_and_unknown_shot_counts_get_none() -> None:
    runs = [
        cls_run("base", None, 0.5),
        cls_run("sft", 4, 0.6),
        cls_run("rft", 4, 0.8),
        cls_run("rft", 3, 0.7),
    ]
    config = from_dict(ReportConfig, {"paper_column": "Cars196"})
    table = build_table(runs, config)
    assert table.columns[0].paper_label == "Table 2, Cars196"
    assert "accuracy (paper: Table 2, Cars196)" in markdown_table(table)
    assert (
        table.row("rft", 4).paper_row == "Qwen2-VL-2B RFT 4-shot"
        and table.row("rft", 4).paper["accuracy"] == 95.3
    )
    # 3-shot is no row of the paper: no paper value (formerly any count fell back to some row)
    assert table.row("rft", 3).paper["accuracy"] is None and table.row("rft", 3).paper_row == ""
    assert any("the paper has no row for RFT 3-shot" in n for n in table.notes)
    lvis = build_table(
        [
            run("rft", 4, {"mAP": 0.2}, paper_table="table4"),
            run("rft", 10, {"mAP": 0.3}, paper_table="table4"),
        ],
        ReportConfig(),
    )
    assert lvis.row("rft", 4).paper["mAP"] is None and lvis.row("rft", 10).paper["mAP"] == 19.4
    # the paper's protocol, followed everywhere: said so, and which reward trained the rows
    assert "Paper columns: same protocol as ours." in table.notes
    assert "Trained with: RFT rows: reward:classification_containment; SFT rows: sft:vrft." in table.notes


@pytest.mark.parametrize(
    ("tags", "line"),
    [
        ({"protocol.max_pixels": "401408"}, "max_pixels 401408 ≠ 12845056"),
        ({"protocol.system_prompt": "r1"}, "system_prompt r1 ≠ none"),
        ({"protocol.max_new_tokens": "256"}, "max_new_tokens 256 ≠ 1024"),
        (
            {"protocol.gate": "authors_file@bbbbbbbbbbbb"},
            "gate authors_file@bbbbbbbbbbbb ≠ authors_file@aaaaaaaaaaaa",
        ),
        ({"protocol.ground_truth_sha256": "c" * 64}, "ground_truth_sha256 cccccccccccc ≠ dddddddddddd"),
        ({"training": "reward:detection[tau=0.3]"}, "training reward:detection[tau=0.3] ≠ reward:detection"),
    ],
)
def test_a_row_evaluated_or_trained_otherwise_is_refused_with_one_line_naming_the_difference(
    tags, line
) -> None:
    same = {
        "protocol.system_prompt": "none",
        "protocol.max_new_tokens": "1024",
        "protocol.max_pixels": "12845056",
        "protocol.gate": "authors_file@aaaaaaaaaaaa",
        "protocol.ground_truth_sha256": "d" * 64,
    }

    def det(method: str, shots: int | None, mAP: float, **extra: str) -> RunRecord:
        training = {"rft": "reward:detection", "sft": "sft:vrft"}.get(method, "")
        return run(
            method, shots, {"mAP": mAP}, paper_table="table3", **{"training": training, **same, **extra}
        )

    # the reference is the base row's protocol, and the training most RFT rows share
    runs = [
        det("base", None, 0.2),
        det("rft", 2, 0.4),
        det("sft", 2, 0.3),
        det("rft", 8, 0.45),
        det("rft", 4, 0.5, **tags),
    ]
    table = build_table(runs, ReportConfig())
    assert table.row("rft", 4) is None and table.row("rft", 2) is not None
    refused = [n for n in table.notes if n.startswith("Refused RFT 4-shot")]
    assert len(refused) == 1 and line in refused[0] and "\n" not in refused[0]


def test_notes_come_from_every_row_and_name_our_own_choices() -> None:
    runs = [
        cls_run("base", None, 0.5),
        cls_run("sft", 4, 0.6),
        cls_run("rft", 4, 0.8, **{"training": "reward:classification"}),
    ]
    table = build_table(runs, from_dict(ReportConfig, {"paper_column": "Cars196"}))
    notes = " ".join(table.notes)
    assert "NOT the same protocol" in notes
    assert "RFT training reward:classification (the authors': reward:classification_containment)" in notes
    # a value recorded by a later row only (the first row's tags used to decide the notes)
    det = [
        run("base", None, {"mAP": 0.2}, ground_truth="official", paper_table="table3"),
        run("rft", 4, {"mAP": 0.3}, ground_truth="rebuilt", paper_table="table3"),
    ]
    notes = " ".join(build_table(det, ReportConfig()).notes)
    assert "ground truth official / rebuilt" in notes and "ground truth rebuilt from rows" in notes
    ours = [cls_run("base", None, 0.5, **{"protocol.max_pixels": "401408", "protocol.class_names": "vrft"})]
    notes = " ".join(build_table(ours, from_dict(ReportConfig, {"paper_column": "Cars196"})).notes)
    assert (
        "max_pixels 401408 (the authors': 12845056)" in notes
        and "class_names vrft (the authors': authors)" in notes
    )
