"""``pytest-shrinkbench`` / ``python -m pytest_shrinkbench``: commands outside a pytest session.

``options`` prints every setting as the Markdown table of docs/options.md. ``report RESULTS...`` merges results stores and JSON Lines files (e.g. the shards of a split
run), writes the leaderboard as Markdown, CSV, JSON and HTML with plots, and optionally gates
on a baseline (exit 1 on a regression) or saves one; merging shards, it exits 3 when a planned
shard or case is missing or a suite was refused. ``prune FOLDER`` removes old run files whose
rows are all in the folder's store. ``prepare PYTEST-ARGS`` trains or verifies the base models a
run needs; ``submit`` runs a run's shards as a Slurm job array (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cluster
from .plugin import prepare
from .plugin.settings import BY_NAME, markdown_table
from .results import formats, gate, prune, report
from .results.merge import read_manifests

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
# The settings that decide which base models a run needs: what prepare's help lists.
PREPARE_SETTINGS = ("shrink_suites", "shrink_weights", "shrink_cache", "shrink_data_root", "shrink_device")


def _formats(text: str) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in formats.FORMATS]
    if not words or unknown:
        raise argparse.ArgumentTypeError(f"formats are a comma list of {', '.join(formats.FORMATS)}; got {text!r}")
    return words


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="pytest-shrinkbench", description=__doc__.split("\n\n")[0])
    commands = main.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser(
        "report",
        help="merge results and write the leaderboard (Markdown, CSV, JSON, HTML with plots)",
        description="Merge results stores (*.sqlite) and JSON Lines files (or folders of them), deduplicated by "
        "case key, and write the leaderboard report.",
    )
    cmd.add_argument("results", nargs="+", type=Path, help="results stores, *.jsonl files, or folders holding them")
    cmd.add_argument("-o", "--output", type=Path, default=Path("shrinkbench-report"), help="output folder (default: ./shrinkbench-report)")
    cmd.add_argument("--format", dest="formats", type=_formats, default=list(formats.FORMATS), help="comma list of md,csv,json,html (default: all)")
    cmd.add_argument("--no-plots", action="store_true", help="skip the PNG plots (and their HTML images)")
    cmd.add_argument("--title", default=None, help="title of the Markdown and HTML pages")
    cmd.add_argument("--baseline", type=Path, help="compare to this baseline file; exit 1 on a regression")
    cmd.add_argument("--save-baseline", type=Path, help="write the merged leaderboard's expected values here")
    cmd.add_argument("--tolerance", type=_amount, default=gate.DEFAULT_TOLERANCE_POINTS, help="allowed drop of mean top-1 in percentage points, or rise of mean perplexity in percent (default 1)")
    cmd.add_argument("--tolerance-stds", type=_amount, default=gate.DEFAULT_TOLERANCE_STDS, help="allowed worsening in stds over seeds (default 2); the larger allowance wins")
    cmd.add_argument("-q", "--quiet", action="store_true", help="do not print the Markdown leaderboard")
    _add_prune(commands)
    commands.add_parser("options", help="print every setting (flag, ini name, environment variable, default) as a Markdown table",
                        description="The table of docs/options.md, generated from the settings' one declaration.")
    cmd = commands.add_parser(
        "prepare", help="train or verify every base model a run needs, into the cache its shards will read",
        description="Takes the run's own pytest arguments and reads them (and the ini file, the environment and the "
        "project's conftest.py) exactly as the run will; trains into the cache each base model that is missing, "
        "verifies the others, and prints one line per base model. Exit 0 when all are ready.",
        epilog="the settings that matter: " + "; ".join(f"{BY_NAME[n].flag}: {BY_NAME[n].help}" for n in PREPARE_SETTINGS),
    )
    cmd.add_argument("pytest_args", nargs=argparse.REMAINDER, help="the run's pytest arguments")
    cmd = commands.add_parser(
        "submit", help="run the shards of a run as a Slurm job array (submitit), optionally wait and merge them",
        description="Submits N array tasks, task K running: python -m pytest --shrink-shard=K/N "
        "--shrink-results=OUTPUT/shard-K --shrink-cache-mode=readonly PYTEST-ARGS, from this folder. Prepare the "
        "base models first (pytest-shrinkbench prepare PYTEST-ARGS). Submitting again reruns only what the shards' "
        "stores do not hold.",
    )
    cluster.add_arguments(cmd)
    return main


def run_report(args: argparse.Namespace) -> int:
    usage = _report_usage(args)
    if usage:
        print(f"pytest-shrinkbench report: {usage}", file=sys.stderr)
        return EXIT_USAGE
    try:
        rows, sources = report.read_rows(args.results)
        manifests = read_manifests(args.results)
    except ValueError as exc:
        print(f"pytest-shrinkbench report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not rows:
        print("pytest-shrinkbench report: no result rows in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return EXIT_USAGE
    board = report.build(rows, sources=sources + report.unread(args.results), title=args.title, manifests=manifests)
    written = formats.write(board, args.output, args.formats, plots=not args.no_plots)
    if not args.quiet:
        print(formats.to_markdown(board))
        print()
    print(f"read {len(rows)} rows from {len(sources)} source(s); {len(board.rows)} cases after merging")
    for name, path in written.items():
        print(f"wrote {path}")
    status = EXIT_OK
    if args.baseline is not None:
        expected, setup = gate.load_baseline(args.baseline)  # checked by _report_usage
        result = gate.compare(board.entries, expected, points=args.tolerance, stds=args.tolerance_stds, setup=setup, rows=board.rows)
        print(gate.render(result))
        if result.failed:
            status = EXIT_REGRESSION
    if args.save_baseline is not None:
        document = gate.save_baseline(args.save_baseline, board.entries, board.rows)
        print(f"wrote baseline {args.save_baseline} ({len(document['entries'])} entries)")
    if not board.complete:
        for problem in board.problems:
            print(f"pytest-shrinkbench report: {problem}", file=sys.stderr)
        return status or EXIT_INCOMPLETE
    return status


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of days >= 0, got {text!r}")
    return days


def _add_prune(commands: argparse._SubParsersAction) -> None:
    cmd = commands.add_parser(
        "prune", help="remove old run files (run-*.jsonl) whose rows are all in the folder's store",
        description="Remove a results folder's old run files. A run file is removed only when every one of its rows is "
        "in the folder's results store; the store itself is never touched. Give --keep, --older-than or both.")
    cmd.add_argument("folder", type=Path, help="a results folder (e.g. shrinkbench-results)")
    cmd.add_argument("--keep", type=_count, help="keep the newest N run files")
    cmd.add_argument("--older-than", type=_days, metavar="DAYS", help="remove only run files started more than DAYS days ago")
    cmd.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")


def run_prune(args: argparse.Namespace) -> int:
    if not args.folder.is_dir():
        print(f"pytest-shrinkbench prune: {args.folder}: no such folder", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = prune.plan(args.folder, args.keep, args.older_than)
    except ValueError as exc:
        print(f"pytest-shrinkbench prune: {exc}", file=sys.stderr)
        return EXIT_USAGE
    verb = "would remove" if args.dry_run else "removed"
    for path in plan.remove:
        print(f"{verb} {path.name}")
    for path, why in plan.kept:
        print(f"kept {path.name}: {why}")
    freed = sum(p.stat().st_size for p in plan.remove) if args.dry_run else prune.apply(plan)
    store = f"the store {plan.store.name} is untouched" if plan.store else "no store to check against"
    print(f"{verb} {len(plan.remove)} of {plan.runs} run files ({freed / 1e6:.1f} MB) in {args.folder}; {store}")
    return EXIT_OK


def _report_usage(args: argparse.Namespace) -> str | None:
    """What is wrong with the report command's options, naming the option, before anything is read or written."""
    if args.output.exists() and not args.output.is_dir():
        return f"-o/--output: {args.output} is a file, not a folder"
    if args.save_baseline is not None and args.save_baseline.is_dir():
        return f"--save-baseline: {args.save_baseline} is a folder, not a file"
    if args.baseline is not None:
        try:
            gate.load_baseline(args.baseline)
        except ValueError as exc:
            return f"--baseline: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["prepare"] and not {"-h", "--help"} & set(argv[1:]):
        return prepare.run(argv[1:])  # every argument is pytest's: argparse would take some for its own
    args = parser().parse_args(argv)
    if args.command == "report":
        return run_report(args)
    if args.command == "submit":
        return cluster.submit(args, main_report)
    if args.command == "prune":
        return run_prune(args)
    if args.command == "options":
        print(markdown_table())
        return EXIT_OK
    return EXIT_USAGE  # pragma: no cover (argparse requires a command)


def main_report(args: list[str]) -> int:
    """``pytest-shrinkbench report ARGS`` (how ``submit --wait`` merges its shards)."""
    return main(["report", *args])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
