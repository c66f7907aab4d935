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
