"""The `ontogeny` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .display import ProgressDisplay, console, step_progress
from .exceptions import OntogenyError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="A lab for the science of training dynamics.")


@app.command("run")
def run_command(
    spec: Annotated[Optional[str], typer.Argument(help="A spec TOML file or a built-in recipe name.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a spec field: key=value.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<name>).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the stopped run in this directory.")] = None,
    extend_to: Annotated[Optional[int], typer.Option(help="With --resume: train the run on to this many steps.")]
    = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in --out (only a directory ontogeny "
                                                 "marked as a run).")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: the spec's).")] = None,
    commit_seconds: Annotated[float, typer.Option(help="Seconds between durable saves.")] = 30.0,
    backend: Annotated[str, typer.Option(help="sequential (this process) or ray (a Ray task per ensemble).")]
    = "sequential",
    address: Annotated[Optional[str], typer.Option(help="With --backend ray: an existing cluster (default: start a "
                                                        "local one).")] = None,
    max_parallel: Annotated[Optional[int], typer.Option(help="With --backend ray: tasks at once (default: the "
                                                             "cluster's CPUs).")] = None,
    max_members: Annotated[Optional[int], typer.Option(help="Members per ensemble at most (default: as many as fit "
                                                            "a worker's memory).")] = None,
    gpus_per_task: Annotated[Optional[float], typer.Option(help="With --backend ray and cuda: GPUs per task "
                                                                "(a fraction packs several on one GPU).")] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print the plan (ensembles, members, memory, estimated time) "
                                                      "and train nothing.")] = False,
    tracker: Annotated[Optional[list[str]], typer.Option(help="Send the curves to tensorboard, mlflow or wandb while "
                                                             "training (beside the run, RUN-TRACKER); repeatable.")]
    = None,
) -> None:
    """Train every member of a spec as ensembles and record them into a run directory."""
    from .analysis.summary import member_summary
    from .train.malloc import reuse_freed_memory
    from .train.plan import GPU_SHARE, gpu_minutes
    from .train.run import plan_run, run

    if spec is None and resume is None:
        _fail("give a spec file or recipe name, or --resume DIR")
    if resume is not None and out is not None:
        _fail("--resume DIR names the run; drop --out")
    if plan:
        try:
            the_plan, seconds, flops = plan_run(spec, overrides=set_, max_members=max_members,
                                                max_parallel=max_parallel or 1, device=device)
        except OntogenyError as err:
            _fail(str(err))
        for line in the_plan.describe(seconds):
            console.print(line, markup=False, highlight=False)
        first = the_plan.groups[0][0].spec
        where = "GPU" if first.device.startswith("cuda") else "CPU"
        console.print(f"{len(the_plan.groups)} ensembles in {len(the_plan.tasks)} tasks; "
                      + (f"about {sum(seconds):,.0f} s of training on this machine's {where}, one task at a time"
                         if seconds is not None else "not timed: this machine lacks the GPU it plans for (FLOPs "
                         "counted on one member's shapes)"), markup=False, highlight=False)
        precision = first.precision
        minutes = gpu_minutes(sum(flops), precision)
        console.print(f"{_flop_count(sum(flops))} of training (matmuls, forward and backward); on one H100 at "
                      f"{GPU_SHARE:.0%} of its dense {precision} peak: ~"
                      + (f"{minutes:,.1f} min" if minutes >= 1 else f"{60 * minutes:,.1f} s")
                      + " (from FLOPs alone; small models are bound by launches)", markup=False, highlight=False)
        return
    display = ProgressDisplay()
    try:
        with reuse_freed_memory():  # this process is ours: let training steps reuse their memory (train/malloc.py)
            result = run(spec, overrides=set_, out=resume or out, resume=resume is not None, overwrite=overwrite,
                         extend_to=extend_to, device=device, commit_seconds=commit_seconds, backend=backend,
                         address=address, max_parallel=max_parallel, max_members=max_members,
                         gpus_per_task=gpus_per_task, progress=display, trackers=tracker or ())
    except KeyboardInterrupt:
        display.stop()
        where = resume or out or "runs/<name>"
        print(f"interrupted; continue with: ontogeny run --resume {where}", file=sys.stderr)
        sys.exit(130)  # not typer.Exit(130): that is how typer reports a Ctrl-C nobody handled (see main)
    except OntogenyError as err:
        display.stop()
        _fail(str(err))
    display.stop()
    table = Table(title=f"{result.path}: per member (steps where accuracy first reached 99%)")
    frame = member_summary(result.scalars(name=["train/acc", "test/acc"]), result.members())
    for column in frame.columns:
        table.add_column(column, justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _flop_count(flops: float) -> str:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= size:
            return f"{flops / size:,.1f} {unit}"
    return f"{flops:,.0f} FLOP"


@app.command("analyze")
def analyze_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    what: Annotated[Optional[str], typer.Option(help="Comma-separated analysis steps (default all but the costly "
                                                     "ones run on request, e.g. sharpness; an unknown name lists "
                                                     "the known ones).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary and tables as JSON.")] = False,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="A step's setting, STEP.KEY=VALUE (e.g. "
                                                                         "llc.lr=3e-3); repeatable.")] = None,
) -> None:
    """Find transitions, per-example dynamics and seed statistics; write them into the run as tables."""
    from .analysis import analyze
    from .store import open_run

    options: dict[str, dict[str, str]] = {}
    for item in settings or []:
        key, equals, value = item.partition("=")
        step, dot, name = key.partition(".")
        if not (equals and dot and step and name):
            _fail(f"--set {item}: expected STEP.KEY=VALUE, e.g. llc.lr=3e-3")
        options.setdefault(step, {})[name] = value
    try:
        with step_progress("analyze") as progress:
            result = analyze(open_run(run_dir), what=what.split(",") if what else None, progress=progress,
                             options=options)
    except (OntogenyError, ValueError) as err:
        _fail(str(err))
    if json_:
        tables = {name: json.loads(frame.to_json(orient="records")) for name, frame in result.tables.items()
                  if name != "example_dynamics"}  # per-example rows stay in the run directory
        print(json.dumps({"summary": result.summary, "tables": tables}, indent=1))
        return
    for line in result.summary:  # one line each, however long: grep finds a whole finding
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    if result.tables:
        console.print(f"wrote {', '.join(sorted(result.tables))} into {run_dir}", markup=False, highlight=False)


@app.command("compare")
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Run A (the baseline).")],
    run_b: Annotated[Path, typer.Argument(help="Run B (the intervention).")],
    metric: Annotated[str, typer.Option(help="A recorded scalar; its per-subset versions come with it.")] = "test/acc",
    at: Annotated[str, typer.Option(help="final, a step, or onset (the first checkpoint past half the metric's "
                                         "change).")] = "final",
    json_: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """B minus A, per subset (and per grid point of a sweep): difference, 95% t interval and exact p-value (paired
    by seed when the seeds match)."""
    from .analysis.compare import compare_runs
    from .store import open_run

    if at not in ("final", "onset") and not at.isdigit():
        _fail(f"--at: expected final, onset or a step, got {at!r}")
    try:
        rows = compare_runs(open_run(run_a), open_run(run_b), metric=metric, at=at if not at.isdigit() else int(at))
    except (OntogenyError, ValueError) as err:
        _fail(str(err))
    if json_:
        print(rows.to_json(orient="records", indent=1))
        return
    for row in rows.itertuples():
        print(f"{f'[{row.where}] ' if row.where else ''}{row.metric}: {row.verdict}")  # one line each, however long


@app.command("ingest")
def ingest_command(
    source: Annotated[str, typer.Argument(help="A hub model id (EleutherAI/pythia-70m) or a directory of step*/ "
                                               "checkpoint folders (or of state dicts, with --build).")],
    probe: Annotated[Path, typer.Option(help="Probe text (.txt, tokenized by the suite's tokenizer) or token ids "
                                             "[sequences, positions] (.npy, .pt, .parquet).")],
    out: Annotated[Path, typer.Option(help="The run directory (created, or continued).")],
    revisions: Annotated[Optional[str], typer.Option(help="Comma-separated revisions (default: all; hub: "
                                                         "Pythia's 154).")] = None,
    members: Annotated[Optional[str], typer.Option(help="Comma-separated further sources, one member each "
                                                       "(e.g. the other seeds of PolyPythias).")] = None,
    build: Annotated[Optional[str], typer.Option(help="module:function that builds the model, for a directory "
                                                     "of state dicts.")] = None,
    context: Annotated[int, typer.Option(help="Tokens per probe sequence when the probe is text.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Probe sequences per forward pass.")] = 8,
) -> None:
    """Score every checkpoint of a suite on a probe, token by token, into a run (resumable, incremental)."""
    from .suites import ingest

    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one line per revision here instead of a bar per load
    except ImportError:
        pass

    started: dict[str, tuple[float, int]] = {}  # member -> (when its first revision of this session ended, done then)

    def report(member: str, step: int, done: int, total: int, speed: float) -> None:
        first, done_then = started.setdefault(member, (time.monotonic(), done))
        rate = (done - done_then) / max(time.monotonic() - first, 1e-9)  # revisions per second since then
        left = f", about {(total - done) / rate:,.0f} s left for it" if rate > 0 and done < total else ""
        console.print(f"{member} step {step}: {done}/{total} revisions, {speed:,.0f} tokens/s{left}", markup=False,
                      highlight=False)

    try:
        run = ingest(source, probe, out=out, revisions=revisions.split(",") if revisions else None,
                     members=members.split(",") if members else (), build=build, context=context,
                     batch_size=batch_size, progress=report)
    except OntogenyError as err:
        _fail(str(err))
    per_member = run.revisions().groupby("member").size()
    counts = f"{per_member.iloc[0]}" if per_member.nunique() == 1 else f"{per_member.min()}-{per_member.max()}"
    console.print(f"{run.path}: {len(per_member)} member(s) x {counts} revisions ingested; next: ontogeny analyze "
                  f"{run.path}", markup=False, highlight=False)


@app.command("sae")
def sae_command(
    run_dir: Annotated[Path, typer.Argument(help="A run made by `ontogeny run` (its saved weights are read).")],
    out: Annotated[Path, typer.Option(help="The new run of SAEs (members = model member x SAE seed).")],
    at: Annotated[Optional[str], typer.Option(help="Comma-separated checkpoints with saved weights (default: the "
                                                  "last); step 0 (random init) is added as the control.")] = None,
    site: Annotated[Optional[str], typer.Option(help="hidden[.i] (MLP), resid[.l] or mlp[.l] (transformer); default: "
                                                    "hidden / resid, the last layer's.")] = None,
    seeds: Annotated[int, typer.Option(help="SAE seeds per model member.")] = 8,
    kind: Annotated[str, typer.Option(help="topk, relu-l1 or transcoder.")] = "topk",
    width: Annotated[Optional[int], typer.Option(help="Latents (default: 4x the site's width).")] = None,
    k: Annotated[int, typer.Option(help="Active latents per row (topk, transcoder).")] = 8,
    l1: Annotated[float, typer.Option(help="Sparsity penalty (relu-l1; sae-lens's default).")] = 1.0,
    steps: Annotated[int, typer.Option(help="SAE training steps.")] = 2000,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    split: Annotated[Optional[str], typer.Option(help="Evaluation split whose inputs are read (default: "
                                                     "train).")] = None,
    control: Annotated[bool, typer.Option(help="Also train on the step-0 (random-init) model.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier run in --out.")] = False,
) -> None:
    """Train SAEs (or transcoders) on every member at a checkpoint, several seeds each, and say how many latents the
    seeds share, on the trained and on the random-init model."""
    from .sae import agreement_summary, train_run_saes
    from .store import open_run

    try:
        steps_at = [int(s) for s in at.split(",")] if at else None
    except ValueError:
        _fail(f"--at: expected comma-separated steps, got {at!r}")
    try:
        run = train_run_saes(open_run(run_dir), out, at=steps_at, control=control, site=site, seeds=seeds, kind=kind,
                             width=width, k=k, l1=l1, steps=steps, lr=lr, split=split, overwrite=overwrite,
                             progress=lambda line: console.print(line, markup=False, highlight=False))
    except (OntogenyError, ValueError) as err:
        _fail(str(err))
    for line in agreement_summary(run):
        console.print(line, markup=False, highlight=False)
    console.print(f"wrote {run.path}; next: ontogeny report {run.path}", markup=False, highlight=False)


NEXT = {"tensorboard": "tensorboard --logdir {out}",
        "mlflow": "MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {out}",
        "wandb": "wandb sync --sync-all {out}/wandb"}


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.")],
    out: Annotated[Optional[Path], typer.Argument(help="Where to write (default: beside the run, RUN-TRACKER).")]
    = None,
    to: Annotated[str, typer.Option("--to", help="tensorboard, mlflow or wandb (offline).")] = "tensorboard",
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier export at OUT.")] = False,
) -> None:
    """Write a run's curves for a tracker: one tracker run per member, its settings as config."""
    from .integrations.trackers import export

    try:
        with step_progress("export") as progress:
            path = export(run_dir, to, out, overwrite=overwrite, progress=progress)
    except OntogenyError as err:
        _fail(str(err))
    members = json.loads((path / ".ontogeny-export.json").read_text())["members"]
    print(f"wrote {members} members to {path}; next: {NEXT[to].format(out=path)}")


@app.command("check")
def check_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
) -> None:
    """Verify every file of a run against its commit logs and recorded hashes; exit 1 if anything is damaged."""
    from .store import check_run

    report = check_run(run_dir)
    for line in report.problems:
        print(f"problem: {line}")
    for line in report.notes:
        print(f"note: {line}")
    counts = report.counts
    print(f"{'ok' if report.ok else 'damaged'}: {counts['writers']} writers, {counts['files']} files "
          f"({counts['rows']:,} rows), {counts['weights']} weight files, {counts['tables']} tables verified"
          + ("" if report.ok else f"; {len(report.problems)} problem(s)"))
    if not report.ok:
        raise typer.Exit(1)


@app.command("recipes")
def recipes_command() -> None:
    """List the built-in recipes, one line each."""
    from .spec import recipe_about, recipe_names

    table = Table(show_header=True)
    table.add_column("recipe")
    table.add_column("what it shows")
    table.add_column("follows")
    for name in recipe_names():
        about = recipe_about(name)
        table.add_row(name, about["description"], about["source"])
    console.print(table)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="The run directory.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="HTML file (default RUN_DIR/report.html).")]
    = None,
) -> None:
    """Write one self-contained HTML report of a run (plots work offline) and print its path."""
    from .report import write_report

    try:
        with step_progress("report") as progress:
            path = write_report(run_dir, output, progress=progress)
    except OntogenyError as err:
        _fail(str(err))
    print(path)


@app.command("serve")
def serve_command(
    runs_dir: Annotated[Path, typer.Argument(help="A directory whose subdirectories are runs.")],
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
) -> None:
    """Serve a local page listing the runs, their reports and a comparison of two runs; Ctrl-C stops it."""
    from .report.serve import make_server

    try:
        server = make_server(runs_dir, host, port)
    except OntogenyError as err:
        _fail(str(err))
    except OSError as err:  # the port is taken, or the address is not this machine's
        _fail(f"{host}:{port}: {err.strerror or err}")
    print(f"serving {runs_dir} at http://{server.server_address[0]}:{server.server_address[1]}/ (Ctrl-C stops)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _cell(value) -> str:
    import pandas as pd  # loaded already by whatever made the table; not at start-up

    if pd.isna(value):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)  # one unwrapped line, whatever the terminal width
    raise typer.Exit(2)


def main() -> None:
    """The console script: usage errors too are one line on stderr (exit 2), not a box."""
    try:
        from typer._click import exceptions  # newer typer releases carry their own copy of click
    except ImportError:
        from click import exceptions
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer's answer to a Ctrl-C outside a command's own handling (during its imports, say)
            print("interrupted", file=sys.stderr)
    except exceptions.NoArgsIsHelpError:  # the help was printed while the error was made
        code = 2
    except exceptions.ClickException as err:
        print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
        code = err.exit_code
    except typer.Abort:  # click's answer to end of input at a prompt (and older typers' to Ctrl-C)
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
