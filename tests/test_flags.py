"""Review flags per field and per group, the group differential, and a grouped batch."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from smearscan.cell_types import CELL_TYPES
from smearscan.config import ProcessConfig, ReviewConfig, load_config
from smearscan.errors import ConfigError
from smearscan.flags import (
    BLASTS_PRESENT,
    LOW_CONFIDENCE_CELLS,
    LOW_WBC_COUNT,
    POOR_STAIN_OR_FOCUS,
    apply_field_flags,
    summarise_groups,
)
from smearscan.results import SlideResult

SAMPLES = Path(__file__).resolve().parents[1] / "sample_slides"
#: Quality measures well above the default minimums.
SHARP = {
    name: 2 * getattr(ReviewConfig(), f"min_{name}") + 1
    for name in ("focus_laplacian_var", "stain_od", "nucleus_saturation")
}


def _field(name: str, group: str, types: list[str], confidence: float = 0.9, **kw) -> SlideResult:
    cells = [
        {"cell_id": i + 1, "cell_type": t, "type_confidence": confidence, "is_blast": t == "blast"}
        for i, t in enumerate(types)
    ]
    counts = {t: types.count(t) for t in CELL_TYPES}
    return SlideResult(
        slide=name,
        path=f"/data/{name}",
        group=group,
        wbc_count=len(types),
        cell_counts=counts,
        cells=cells,
        quality=dict(SHARP),
        **kw,
    )


def test_field_flags():
    config = ReviewConfig()
    plain = _field("a.jpg", "", ["neutrophil"] * 5)
    apply_field_flags(plain, config)
    assert plain.flags == []
    blasts = _field("b.jpg", "", ["neutrophil", "blast"])
    apply_field_flags(blasts, config)
    assert blasts.flags == [BLASTS_PRESENT]
    unsure = _field("c.jpg", "", ["other"] * 4, confidence=0.3)
    unsure.quality["focus_laplacian_var"] = 5.0
    apply_field_flags(unsure, config)
    assert unsure.flags == [LOW_CONFIDENCE_CELLS, POOR_STAIN_OR_FOCUS]
    assert any("out of focus: focus_laplacian_var 5" in n for n in unsure.notes)
    apply_field_flags(unsure, config)  # idempotent
    assert unsure.flags.count(POOR_STAIN_OR_FOCUS) == 1


def test_low_confidence_share_is_a_strict_limit():
    config = ReviewConfig(low_confidence_share=0.25)
    field = _field("a.jpg", "", ["neutrophil"] * 4)
    field.cells[0]["type_confidence"] = 0.1  # 1 of 4 = 0.25: not above the share
    apply_field_flags(field, config)
    assert LOW_CONFIDENCE_CELLS not in field.flags


def test_group_sums_failed_fields_and_flags():
    a = _field("Im001_1_a.jpg", "Im001", ["neutrophil"] * 60 + ["blast"] * 2)
    b = _field("Im001_1_b.jpg", "Im001", ["lymphocyte"] * 50)
    b.quality["stain_od"] = 0.001
    failed = SlideResult(slide="Im001_1_c.jpg", path="/x", group="Im001", status="failed")
    alone = _field("other.png", "", ["monocyte"] * 3)
    results = [a, b, failed, alone]
    config = ReviewConfig(min_wbc_count=100)
    for r in (a, b, alone):
        apply_field_flags(r, config)
    groups = summarise_groups(results, config)
    assert [g.group for g in groups] == ["Im001", "other.png"]
    im1, other = groups
    assert (im1.fields, im1.fields_failed, im1.wbc_count) == (2, 1, 112)
    assert im1.cell_counts["neutrophil"] == 60 and im1.cell_counts["lymphocyte"] == 50
    assert im1.blast_count == 2 and im1.blast_percent == pytest.approx(100 * 2 / 112)
    assert im1.flags == [BLASTS_PRESENT, POOR_STAIN_OR_FOCUS]  # 112 >= 100 counted
    assert other.flags == [LOW_WBC_COUNT]
    assert a.group_flags == im1.flags == failed.group_flags and alone.group_flags == other.flags
    assert summarise_groups(results, ReviewConfig(min_wbc_count=113))[0].flags[1] == LOW_WBC_COUNT


def test_group_low_confidence_is_over_the_groups_cells():
    sure = _field("a.jpg", "g", ["neutrophil"] * 9)
    unsure = _field("b.jpg", "g", ["other"] * 3, confidence=0.2)  # 3 of 12 = 25 %
    [group] = summarise_groups([sure, unsure], ReviewConfig(min_wbc_count=0))
    assert group.low_confidence_cells == 3 and group.flags == [LOW_CONFIDENCE_CELLS]
    [group] = summarise_groups([sure, unsure], ReviewConfig(low_confidence_share=0.3))
    assert LOW_CONFIDENCE_CELLS not in group.flags


@pytest.mark.parametrize(
    "values",
    [
        {"min_wbc_count": -1},
        {"low_confidence_threshold": 1.5},
        {"low_confidence_share": -0.1},
        {"min_stain_od": -1.0},
        {"quality_window_px": 10},
        {"group_by": " "},
    ],
)
def test_review_config_is_validated(values: dict):
    with pytest.raises(ConfigError, match="review"):
        ProcessConfig().with_overrides(review=values)


def test_review_section_from_toml(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text("[review]\ngroup_by = '^(Im\\d+)'\nmin_wbc_count = 200\n", encoding="utf-8")
    review = load_config(path).review
    assert review.group_by == r"^(Im\d+)" and review.min_wbc_count == 200
    assert "review" in load_config(path).to_dict()


@pytest.fixture(scope="module")
def allidb_fields(tmp_path_factory) -> Path:
    """Three synthetic fields under ALL-IDB-like names: two of Im001, one of Im002."""
    root = tmp_path_factory.mktemp("allidb")
    for src, name in zip(
        ("synth_000.jpg", "synth_001.jpg", "synth_002.jpg"),
        ("Im001_1_a.jpg", "Im001_1_b.jpg", "Im002_0.jpg"),
        strict=True,
    ):
        shutil.copy(SAMPLES / src, root / name)
    return root


def test_grouped_batch_adds_up_the_differential(allidb_fields: Path, tmp_path: Path):
    from smearscan.pipeline import process_batch

    config = ProcessConfig(model="classical").with_overrides(
        scale={"pixel_size_um": 0.1},
        output={"write_previews": False, "write_probabilities": False},
        review={"group_by": r"^(Im\d+)"},
    )
    report = tmp_path / "r.xlsx"
    batch = process_batch([allidb_fields], report, config)
    assert [r.status for r in batch.results] == ["ok"] * 3
    summary = pd.read_excel(report, sheet_name="Summary").set_index("slide")
    differential = pd.read_excel(report, sheet_name="Differential").set_index("group")
    assert list(summary["group"]) == ["Im001", "Im001", "Im002"]
    assert list(differential.index) == ["Im001", "Im002"]
    assert list(differential["fields"]) == [2, 1]
    assert summary["quality_focus_laplacian_var"].gt(0).all()
    for group, rows in summary.groupby("group"):
        row = differential.loc[group]
        assert row["wbc_count"] == rows["wbc_count"].sum()
        for t in CELL_TYPES:
            assert row[f"{t}_count"] == rows[t].sum()
            assert row[f"{t}_percent"] == pytest.approx(
                round(100 * rows[t].sum() / row["wbc_count"], 1)
            )
        assert row["blast_count"] == rows["blast_count"].sum()
        assert row["blast_percent"] == pytest.approx(
            round(100 * row["blast_count"] / row["wbc_count"], 1)
        )
        # ~10-20 WBCs per synthetic field: far fewer than the default 100
        assert LOW_WBC_COUNT in row["flags"]
    run = pd.read_excel(report, sheet_name="Run").set_index("key")["value"]
    assert run["param.review.group_by"] == r"^(Im\d+)" and run["param.review.min_wbc_count"] == 100

    total = int(differential.loc["Im001", "wbc_count"])
    for minimum, flagged in ((total, False), (total + 1, True), (0, False)):
        review = dataclasses.replace(config.review, min_wbc_count=minimum)
        im001 = summarise_groups(batch.results, review)[0]
        assert (LOW_WBC_COUNT in im001.flags) is flagged, minimum


def test_review_page_lists_the_groups_flags(tmp_path: Path):
    from smearscan.review import review_entry

    field = _field("Im001_1_a.jpg", "Im001", ["blast"])
    field.flags, field.group_flags = [BLASTS_PRESENT], [BLASTS_PRESENT, LOW_WBC_COUNT]
    assert review_entry(field, tmp_path).flags == [BLASTS_PRESENT, "LOW_WBC_COUNT (group Im001)"]
    alone = _field("x.jpg", "x.jpg", ["neutrophil"])
    alone.group_flags = [LOW_WBC_COUNT]
    assert review_entry(alone, tmp_path).flags == [LOW_WBC_COUNT]
