"""The run report and the runs server, without a browser: sections present only with their data, size bounds,
the `report` command, and the server's pages, cache and refusals. (test_report_browser.py renders them.)"""

import html
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.compare import compare_runs
from ontogeny.cli import app
from ontogeny.report import data, render_report, serve, write_report
from ontogeny.report.serve import make_server
from ontogeny.store import ShardWriter, write_table
from ontogeny.store.create import create_run, update_meta
from ontogeny.train.run import spec_hash

GROK = ["task.p=13", "seeds=2", "model.width=32", "steps=200", "record.every=50",
        "sweep.task.train_fraction=[0.5,0.7]", "sweep.optim.weight_decay=[0.5,1.0]"]
PARITY = ["task.n_tasks=4", "task.n=8", "task.k=2", "task.batch_size=200", "task.n_test_per_task=20",
          "model.width=32", "steps=300", "seeds=2", "data_orders=2"]


# ---- fixtures: real tiny runs, with and without analysis tables -------------------------------------------------


# test_report_browser.py imports these fixtures, so pytest holds two definitions of each, and each definition would
# build its session value once. This dict (in the one module object both share) makes each run train once.
_BUILT: dict[str, Path] = {}


def once(key: str, build) -> Path:
    """Return `build()`, called only the first time `key` is asked for in this session."""
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


def train(factory, recipe: str, overrides: list[str], name: str) -> Path:
    out = factory.mktemp("runs") / name
    og.run(recipe, overrides=overrides, out=out)
    return out


def analyzed_copy(source: Path, target: Path) -> Path:
    """A copy of a run with the analysis tables of `ontogeny analyze` written into it."""
    shutil.copytree(source, target)
    with og.open(target) as run:
        analyze(run)
    return target


@pytest.fixture(scope="session")
def grok_bare(tmp_path_factory) -> Path:
    """A real tiny grokking sweep (train fraction x weight decay x 2 seeds), no analysis tables."""
    return once("grok_bare", lambda: train(tmp_path_factory, "grokking", GROK, "grok-bare"))


@pytest.fixture(scope="session")
def grok_run(grok_bare, tmp_path_factory) -> Path:
    return once("grok_run", lambda: analyzed_copy(grok_bare, tmp_path_factory.mktemp("runs") / "grok"))


@pytest.fixture(scope="session")
def parity_bare(tmp_path_factory) -> Path:
    """A real tiny multitask-parity run (4 named subsets, 2 init x 2 data-order seeds, no sweep), no analysis
    tables."""
    return once("parity_bare", lambda: train(tmp_path_factory, "multitask-parity", PARITY, "parity-bare"))


@pytest.fixture(scope="session")
def parity_run(parity_bare, tmp_path_factory) -> Path:
    return once("parity_run", lambda: analyzed_copy(parity_bare, tmp_path_factory.mktemp("runs") / "parity"))


@pytest.fixture(scope="session")
def grok_report(grok_run, tmp_path_factory) -> Path:
    return once("grok_report", lambda: write_report(grok_run, tmp_path_factory.mktemp("reports") / "grok.html"))


@pytest.fixture(scope="session")
def parity_report(parity_run, tmp_path_factory) -> Path:
    return once("parity_report",
                lambda: write_report(parity_run, tmp_path_factory.mktemp("reports") / "parity.html"))


@pytest.fixture(scope="session")
def big_run(tmp_path_factory) -> Path:
    """A synthetic run of 32 members x 2000 examples x 50 checkpoints, with its report written."""
    def build() -> Path:
        path = write_synthetic_run(tmp_path_factory.mktemp("runs") / "big")
        write_report(path)
        return path
    return once("big_run", build)


def write_synthetic_run(path: Path, n_members: int = 32, n_examples: int = 2000, n_steps: int = 50) -> Path:
    """A run written directly to the store: a train-fraction sweep whose examples each flip to correct at a known
    log-uniform onset step (earlier with more data); one member diverged. Analysis tables: example_dynamics and
    seed_stats (a data threshold of 0.33)."""
    fractions = [0.2, 0.3, 0.4, 0.5]
    spec = og.load_spec("grokking", {"seeds": n_members // len(fractions), "steps": 20_000,
                                     "sweep.task.train_fraction": fractions}, check_machine=False)
    make_run(path, spec, started="2026-01-01T00:00:00", finished="2026-01-01T01:00")
    member = np.arange(n_members)
    members = pd.DataFrame({"member": member, "ensemble": 0, "init_seed": member // len(fractions),
                            "data_seed": 0, "status": "ok", "diverged_step": None,
                            "task.train_fraction": np.tile(fractions, n_members // len(fractions))})
    members.loc[3, ["status", "diverged_step"]] = ["diverged", 5000]
    steps = np.r_[0, np.cumsum(np.maximum(1, np.diff(np.geomspace(1, 20_000, n_steps).round())))].astype(np.int64)
    rng = np.random.default_rng(0)
    highest = 40_000 * (0.35 / members["task.train_fraction"].to_numpy()) ** 2  # [M] more data: learned sooner
    onsets = np.exp(rng.uniform(np.log(10), np.log(highest)[:, None], (n_members, n_examples)))  # [M, N]
    with ShardWriter(path, background=False) as writer:
        writer.put("members", members)
        for m in member:
            for step in steps:
                correct = onsets[m] <= step  # [N]
                writer.append("examples", {"member": m, "step": step, "split": "test",
                                           "example": np.arange(n_examples), "correct": correct,
                                           "loss": np.where(correct, 0.01, 2.5).astype(np.float32)})
            accuracy = (onsets[m][None, :] <= steps[:, None]).mean(axis=1)  # [S]
            for name, value in (("test/acc", accuracy), ("train/acc", np.minimum(1.0, 3 * accuracy)),
                                ("test/loss", 2.5 * (1 - accuracy) + 1e-3), ("train/loss", 1 - accuracy + 1e-3),
                                ("weight_norm", 10 + np.log1p(steps)), ("grad_norm", 1 / (1 + steps))):
                writer.append("scalars", {"member": m, "step": steps, "name": name, "value": value})
        writer.commit()
    learned_at = np.where(onsets <= steps[-1], steps[np.minimum(np.searchsorted(steps, onsets), len(steps) - 1)],
                          np.nan)
    write_table(path, "example_dynamics", pd.DataFrame({
        "member": np.repeat(member, n_examples), "split": "test", "example": np.tile(np.arange(n_examples), n_members),
        "aoa_step": learned_at.ravel(), "acquired": np.isfinite(learned_at.ravel()), "abruptness": 1.0, "forgetting_events": 0, "learned": np.isfinite(
            learned_at.ravel()), "confidence": rng.uniform(0, 1, n_members * n_examples),
        "variability": rng.uniform(0, 0.5, n_members * n_examples), "correctness": rng.uniform(0, 1, n_members *
                                                                                                  n_examples)}))
    write_table(path, "seed_stats", pd.DataFrame({"config": ["all"], "quantity": ["data_threshold"],
                                                  "estimate": [0.33], "ci_low": [0.3], "ci_high": [0.37],
                                                  "n_members": [n_members]}))
    return path


def make_run(path: Path, spec, **meta) -> None:
    """Make `path` a run of `spec` as `ontogeny run` does, with these meta.json fields, before any row."""
    lock = create_run(path, {"kind": "ontogeny", "spec_sha256": spec_hash(spec)})
    (path / "spec.toml").write_text(spec.to_toml())
    update_meta(path, **meta)
    lock.release()


def section_ids(page: str) -> set[str]:
    return {key for key in ("glance", "curves", "hidden", "phase", "seeds", "dynamics")
            if f'<section id="{key}">' in page}


# ---- the report ---------------------------------------------------------------------------------------------------


def figure_ids(page: str) -> set[str]:
    return set(re.findall(r'<div id="fig-([a-z-]+)"', page))


def test_a_full_run_gets_every_section_with_plotly_inlined_once(grok_report, grok_run):
    page = grok_report.read_text()
    assert section_ids(page) == {"glance", "curves", "hidden", "phase", "seeds", "dynamics"}
    assert {"curves-acc", "curves-loss", "hidden-raster", "hidden-onsets", "phase", "seed-stats", "norms",
            "cartography"} <= figure_ids(page)
    assert page.count("<script src=") == 0  # nothing fetched: the page works offline
    assert page.count("plotly.js v") == 1  # the bundle's banner: inlined exactly once
    threshold = og.open(grok_run).table("seed_stats").query("quantity == 'data_threshold'").estimate
    assert len(threshold) == 1 and ("data threshold" in page)  # on the phase diagram, reached or not
    assert "step + 1" in page and "training step" in page
    assert len(page.encode()) < 8_000_000
    # the title says what the run is: its directory, the recipe, and the keys changed from it
    assert "<h1>grok (grokking, changed: task.p = " in page and "seeds = " in page.split("</h1>")[0]


def test_a_run_without_sweep_or_analysis_tables_omits_their_sections(parity_bare):
    with og.open(parity_bare) as run:
        page = render_report(run)
    assert section_ids(page) == {"glance", "curves", "hidden", "dynamics"}
    assert figure_ids(page) == {"curves-acc", "curves-loss", "hidden-raster", "hidden-onsets", "norms"}
    assert "Hidden transitions: per-subset curves" in page  # the run has named subsets
    assert "first checkpoint from which subset accuracy stays" in page  # onsets computed here, and said so
    assert "transition onset" not in page
    assert " on cpu in float32, ontogeny " in page  # the machine and the precision it trained in


def test_analysis_tables_are_used_where_present(parity_report, parity_run, grok_bare):
    page = parity_report.read_text()
    tables = og.open(parity_run).tables()
    assert {"seed_stats", "variance", "solutions", "subset_onsets"} <= set(tables)  # 2 init x 2 data seeds
    assert section_ids(page) == {"glance", "curves", "hidden", "seeds", "dynamics"}  # no sweep: no phase diagram
    assert {"seed-stats", "variance", "solutions", "cartography"} <= figure_ids(page)
    assert "subset_onsets.onset_step" in page
    assert ("transition onset" in page) == ("transitions" in tables)
    with og.open(grok_bare) as run:
        page = render_report(run)
    assert section_ids(page) == {"glance", "curves", "hidden", "phase", "dynamics"}  # phase from the run's curves
    assert "Hidden transitions: per-example curves" in page and "data threshold" not in page


def test_a_large_run_is_downsampled_and_says_so(big_run):
    out = big_run / "report.html"  # where write_report puts it by default
    page = out.read_text()
    assert out.stat().st_size < 20_000_000
    assert "downsampled: 400 of 2000 examples shown, evenly spaced over the onset order" in page
    assert "downsampled: a fixed random 20000 of 64000 points" in page
    assert "Diverged (loss NaN/inf, frozen): member 3 at step 5000" in page
    assert "data threshold (all): 0.33" in page


def test_log_even_steps_and_rows_keep_the_ends_and_the_budget():
    steps = np.r_[0, np.arange(1, 10_001, 7)]
    kept = data.log_even(steps, 200)
    assert kept[0] == 0 and kept[-1] == steps[-1] and len(kept) <= 200 and np.all(np.isin(kept, steps))
    assert np.median(np.diff(np.log1p(kept))) > np.median(np.diff(np.log1p(steps)))  # thinned where dense
    assert list(data.even_rows(5, 10)) == [0, 1, 2, 3, 4]
    rows = data.even_rows(1000, 400)
    assert rows[0] == 0 and rows[-1] == 999 and len(rows) == 400


def test_fallback_example_onset_is_where_an_example_stays_correct(tmp_path):
    path = tmp_path / "tiny"
    make_run(path, og.load_spec("grokking"))
    pattern = {0: [0, 1, 0, 1, 1], 1: [0, 0, 0, 0, 0], 2: [1, 1, 1, 1, 1], 3: [0, 0, 0, 0, 1]}  # correct per step
    steps = [0, 1, 2, 4, 8]
    with ShardWriter(path, background=False) as writer:
        for example, correct in pattern.items():
            writer.append("examples", {"member": 0, "step": steps, "split": "test", "example": example,
                                       "loss": 1.0, "correct": np.asarray(correct, bool)})
        writer.commit()
    with og.open(path) as run:
        onsets, _ = data.example_onsets(run)
    assert onsets.set_index("example").onset.to_dict() == pytest.approx({0: 4.0, 1: np.nan, 2: 0.0, 3: 8.0},
                                                                        nan_ok=True)


# ---- the command ------------------------------------------------------------------------------------------------


def test_report_command_writes_the_file_and_prints_its_path(parity_bare, tmp_path):
    out = tmp_path / "r.html"
    done = CliRunner().invoke(app, ["report", str(parity_bare), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(out) and out.stat().st_size > 1_000_000
    assert done.stderr == ""  # under PLAIN_PROGRESS_AFTER seconds: no progress lines


def test_report_and_analyze_say_the_step_under_way_in_a_log(parity_bare, tmp_path, monkeypatch):
    import ontogeny.display

    monkeypatch.setattr(ontogeny.display, "PLAIN_PROGRESS_AFTER", 0.0)  # as if the command had run long
    done = CliRunner().invoke(app, ["report", str(parity_bare), "-o", str(tmp_path / "r.html")])
    progress = [line for line in done.stderr.splitlines() if "] report: " in line]  # no terminal: a line each
    assert "report: glance (1/13)" in progress[0] and "report: inside (13/13)" in progress[-1]
    assert done.stdout.strip() == str(tmp_path / "r.html")  # the results stay alone on standard output
    copy = shutil.copytree(parity_bare, tmp_path / "run")  # analyze writes tables: leave the shared fixture bare
    done = CliRunner().invoke(app, ["analyze", str(copy), "--what", "grokking,seeds", "--json"])
    progress = [line for line in done.stderr.splitlines() if "] analyze: " in line]
    assert [line.split("analyze: ")[1].split(",")[0] for line in progress] == ["grokking (1/2)", "seeds (2/2)"]
    assert json.loads(done.stdout)["summary"]  # --json stays JSON


def test_report_command_refuses_a_bad_run_dir_in_one_line(tmp_path):
    done = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert done.exit_code == 2 and done.stderr.strip().count("\n") == 0 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "no such run directory" in done.stderr


# ---- the server -------------------------------------------------------------------------------------------------


@pytest.fixture
def served(grok_run, parity_run, tmp_path):
    """A runs directory (two finished runs, one just started, one with a broken spec) served on a free port in a
    thread."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "grok").symlink_to(grok_run)
    (runs / "parity").symlink_to(parity_run)
    make_run(runs / "started", og.open(grok_run).spec)
    (runs / "not-a-run").mkdir()
    (runs / "not-a-run" / "spec.toml").write_text("steps = 10\n")  # a spec alone does not make a run
    make_run(runs / "broken", og.load_spec("grokking"))
    (runs / "broken" / "spec.toml").write_text("steps = 'many'\n")
    server = make_server(runs, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", runs
    server.shutdown()
    server.server_close()


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_server_lists_runs_with_their_status(served):
    base, _ = served
    status, body = fetch(f"{base}/api/runs")
    runs = {r["name"]: r for r in json.loads(body)}
    assert status == 200 and set(runs) == {"grok", "parity", "started", "broken"}
    assert runs["broken"]["state"].startswith("unreadable: ") and "steps" in runs["broken"]["state"]
    assert runs["grok"]["state"] == "finished" and runs["grok"]["ok"] == 8 and runs["grok"]["steps_done"] == 200
    assert runs["started"]["state"] == "running" and runs["started"]["steps_done"] is None
    status, page = fetch(base + "/")
    assert status == 200 and "/run/grok/" in page and "http-equiv='refresh'" in page  # a run is still going


def test_the_index_reads_a_run_again_only_when_its_files_change(served, monkeypatch):
    _, runs = served
    directory = serve.RunsDirectory(runs)
    first = directory.status("grok")
    opened = []
    monkeypatch.setattr(serve, "Run", lambda path: opened.append(path) or og.open(path))
    assert directory.status("grok") == first and opened == []  # from the cache: no table read
    meta = runs / "grok" / "meta.json"
    meta.write_text(meta.read_text())  # a new mtime
    assert directory.status("grok") == first and len(opened) == 1


def test_server_caches_reports_until_the_run_changes(served, monkeypatch):
    base, runs = served
    made = []
    monkeypatch.setattr(serve, "render_report", lambda run, **kw: made.append(run.path.name) or render_report(run, **kw))
    status, first = fetch(f"{base}/run/parity/")
    assert status == 200 and "Hidden transitions" in first and "all runs" in first
    assert fetch(f"{base}/run/parity/")[1] == first and made == ["parity"]  # the second from the cache
    meta = runs / "parity" / "meta.json"
    meta.write_text(meta.read_text())  # a new mtime: the report is made afresh
    assert fetch(f"{base}/run/parity/")[0] == 200 and made == ["parity", "parity"]
    status, page = fetch(f"{base}/run/started/")  # a run with nothing recorded yet still gets a page
    assert status == 200 and "location.reload" in page


def test_server_compares_two_runs_and_refuses_unknown_paths(served):
    base, _ = served
    status, page = fetch(f"{base}/compare?a=grok&b=parity&name=test/loss")
    assert status == 200 and 'id="fig-compare"' in page and "/plotly.min.js" in page
    assert fetch(f"{base}/plotly.min.js")[0] == 200
    for bad in ("/run/not-a-run/", "/run/..%2F..%2Fetc/", "/compare?a=grok&b=..", "/nothing"):
        assert fetch(base + bad)[0] == 404, bad
    assert fetch(f"{base}/run/broken/")[0] == 503  # its spec cannot be read: an error page, the server goes on
    assert fetch(base + "/")[0] == 200


def test_the_compare_page_gives_the_interval_and_verdict_of_the_command(served, grok_run):
    base, runs = served
    (runs / "grok-again").symlink_to(grok_run)
    status, page = fetch(f"{base}/compare?a=grok&b=grok-again&name=test/acc")
    rows = compare_runs(og.open(grok_run), og.open(grok_run), metric="test/acc")  # the metric and its subsets
    assert status == 200 and "id='verdicts'" in page and len(rows) > 1
    for row in rows.itertuples():
        assert html.escape(row.verdict) in page and f"[{row.low:+.4g}, {row.high:+.4g}]" in page
    status, page = fetch(f"{base}/compare?a=grok&b=parity&name=test/acc")
    assert status == 200 and "No comparison of final values: runs that cannot be compared" in page


def test_a_run_whose_members_all_ended_is_finished_whatever_made_it(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for name, close in (("done", True), ("killed", False)):
        rec = og.Recorder(runs / name, member={"seed": 0}, probes={"test": (x, y)}, every=[0])
        rec.step(0, torch.nn.Linear(4, 3))
        if close:
            rec.close()
        else:
            rec.commit()
            rec.writer.close()  # the process died: the member stays `running`
    monkeypatch.setattr(serve, "STALE_SECONDS", 0)  # both quiet for longer than the staleness limit
    directory = serve.RunsDirectory(runs)
    assert directory.status("done")["state"] == "finished" and directory.status("killed")["state"] == "stopped"


def test_server_refuses_requests_for_another_host(served):
    """DNS rebinding: a page on evil.example.com resolving to 127.0.0.1 must not read the runs through our port."""
    base, _ = served
    port = base.rsplit(":", 1)[1]
    for host, expected in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200), ("evil.example.com", 403),
                           (f"evil.example.com:{port}", 403), ("", 403)):
        request = urllib.request.Request(f"{base}/api/runs", headers={"Host": host})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
        assert status == expected, host
    assert serve.host_allowed("[::1]:8765", serve.allowed_hosts("127.0.0.1"))
    assert serve.host_allowed("192.168.1.7:80", serve.allowed_hosts("0.0.0.0"))
    assert not serve.host_allowed("evil.example.com", serve.allowed_hosts("0.0.0.0"))


def test_member_lines_are_one_trace_with_gaps_and_a_large_run_draws_a_sample_of_them():
    from ontogeny.report.figures import MAX_MEMBER_LINES, member_traces

    frame = pd.DataFrame({"member": [0, 0, 2, 2, 2], "step": [0, 9, 0, 9, 99], "value": [1.0, 0.5, 1.0, np.inf, 0.1]})
    (trace,) = member_traces(frame, "#1f77b4", "test/acc", "test/acc")
    assert np.array_equal(np.asarray(trace.x), [1, 10, np.nan, 1, 10, 100], equal_nan=True)  # a gap between members
    assert np.allclose(np.asarray(trace.y), [1, 0.5, np.nan, 1, np.nan, 0.1], equal_nan=True)
    assert np.array_equal(np.asarray(trace.customdata)[:, 0], [0, 0, np.nan, 2, 2, 2], equal_nan=True)
    many = pd.DataFrame({"member": np.repeat(np.arange(250), 2), "step": np.tile([0, 10], 250), "value": 0.5})
    (trace,) = member_traces(many, "#1f77b4", "test/acc", "test/acc")
    drawn = np.unique(np.asarray(trace.customdata)[:, 0])
    drawn = drawn[np.isfinite(drawn)]
    assert len(drawn) == MAX_MEMBER_LINES and drawn[0] == 0 and drawn[-1] == 249
    assert f"({MAX_MEMBER_LINES} of 250 drawn)" in trace.name
