"""The worked examples of docs/extending.md, run: a producer of one's own, an analysis step, a report section.
(The task and the model examples are tests/test_registry.py and tests/test_extending_models.py.) The docs include
the code between the `--8<--` markers, so what they show is what runs here."""

import numpy as np
import pytest

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.analyze import ANALYSES
from ontogeny.report import render_report
from ontogeny.report.page import SECTIONS


def write_my_run(path):
    # --8<-- [start:producer]
    from ontogeny.store import ShardWriter, create_run, member_row, members_frame

    create_run(path, {"kind": "my-simulator", "version": "0.1"}).release()  # the run directory and its marker
    members = members_frame([member_row(m, "ok", ensemble=0, init_seed=m, data_seed=0, **{"optim.lr": lr})
                             for m, lr in enumerate([0.1, 0.1, 0.3, 0.3])])
    steps = np.array([0, 10, 100, 1000])
    with ShardWriter(path, "simulator") as writer:  # one writer per process; each commit is all or nothing
        writer.put("members", members)
        for member, lr in zip(members.member, members["optim.lr"]):
            accuracy = 1 - np.exp(-lr * steps / 100 * (1 + member % 2))
            writer.append("scalars", {"member": member, "step": steps, "name": "test/acc", "value": accuracy})
        writer.commit()
    # --8<-- [end:producer]


def test_a_producer_of_ones_own_gets_every_analysis_and_the_report(tmp_path):
    write_my_run(tmp_path / "run")
    run = og.open(tmp_path / "run")
    assert run.producer == {"kind": "my-simulator", "version": "0.1"} and len(run.scalars()) == 16
    result = analyze(run)
    assert "seed_stats" in result.tables or result.summary  # the analyses that fit a run of scalars ran
    assert "Accuracy per member" in render_report(run)


@pytest.fixture
def registered():
    """Removes what a test registered, so that the registries hold ontogeny's own kinds again afterwards."""
    steps, sections = set(ANALYSES.names()), set(SECTIONS)
    yield
    for name in set(ANALYSES.names()) - steps:
        ANALYSES._kinds.pop(name)
    for key in set(SECTIONS) - sections:
        SECTIONS.pop(key)


def test_an_analysis_step_and_a_report_section_of_ones_own(tmp_path, registered):
    write_my_run(tmp_path / "run")
    # --8<-- [start:step]
    from ontogeny.analysis.analyze import Context, StepResult, analysis_step

    @analysis_step("final_spread", scalars=("test/acc",), writes=("final_spread",))
    def final_spread(context: Context) -> StepResult:
        """Table `final_spread` (config, n, low, high: the range of final test accuracy over a grid point's seeds)."""
        final = context.outcomes["final test/acc"].rename("final")  # one value per member
        table = (context.members.join(final, on="member").groupby("config").final
                 .agg(n="count", low="min", high="max").reset_index())
        lines = [f"final_spread [{row.config}]: {row.low:.3f}-{row.high:.3f} over {row.n} seeds"
                 for row in table.itertuples()]
        return StepResult(tables={"final_spread": table}, summary=lines)
    # --8<-- [end:step]
    # --8<-- [start:section]
    from ontogeny.report import ReportContext, Section, report_section, table_html

    @report_section("final-spread")
    def final_spread_section(context: ReportContext) -> Section | None:
        if "final_spread" not in context.run.tables():
            return None  # nothing to show for this run: the section is left out
        return Section("final-spread", "Final accuracy range", "Over each grid point's seeds.",
                       [table_html(context.run.table("final_spread"))])
    # --8<-- [end:section]
    run = og.open(tmp_path / "run")
    result = analyze(run, what=["final_spread"])
    table = result.tables["final_spread"].set_index("config")
    finals = run.scalars(step=1000).set_index("member").value
    assert table.loc["lr=0.1", "low"] == pytest.approx(finals[[0, 1]].min())
    assert table.loc["lr=0.3", "high"] == pytest.approx(finals[[2, 3]].max())
    assert "final_spread [lr=0.3]" in " ".join(result.summary)
    page = render_report(run)
    assert "Final accuracy range" in page and page.index('<section id="curves">') < page.index(
        '<section id="final-spread">')  # after ontogeny's own sections
