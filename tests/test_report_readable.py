"""Reports a person reads (issue 11, item 7): contents, collapsible sections, coinciding curves
named and drawn distinguishably, baseline notes, no empty panels."""

from __future__ import annotations

from factorgym.envs.baselines import BASELINE_NOTES, run_baselines
from factorgym.envs.report import coinciding, write_html_report
from test_short_spans import FREE, _tensor


# ---------------------------------------------------------------- item 7: the report
def test_report_has_contents_sections_notes_and_distinguishable_lines(tmp_path):
    tensor = _tensor(200, 1)  # one asset: buy_and_hold and equal_weight coincide
    results = run_baselines(tensor, names=("cash", "buy_and_hold", "equal_weight"), execution=FREE)
    assert coinciding(results) == {"equal_weight": "buy_and_hold"}
    html = write_html_report(tmp_path / "r.html", results).read_text()
    assert "<nav><h2>Contents</h2>" in html and "href='#run-buy-and-hold'" in html
    assert html.count("<details") == 3 and "<summary>cash</summary>" in html
    assert "Coinciding curves: equal_weight = buy_and_hold" in html
    assert "What the baselines do" in html and BASELINE_NOTES["buy_and_hold"] in html


def test_no_empty_panels():
    tensor = _tensor(60, 2)
    res = run_baselines(tensor, names=("cash", "equal_weight"), execution=FREE)
    cash_fig = res["cash"].plot()
    assert len(cash_fig.axes) == 1 and "never invested" in cash_fig.axes[0].get_title()
    ew_fig = res["equal_weight"].plot()
    assert len(ew_fig.axes) == 3
    for fig in (cash_fig, ew_fig):
        for ax in fig.axes:
            assert ax.has_data()
