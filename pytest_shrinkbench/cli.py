"""``pytest-shrinkbench`` / ``python -m pytest_shrinkbench``: commands outside a pytest session.

``options`` prints every setting as the Markdown table of docs/options.md. ``report RESULTS...`` merges results stores and JSON Lines files (e.g. the shards of a split
run), writes the leaderboard as Markdown, CSV, JSON and HTML with plots, and optionally gates
on a baseline (exit 1 on a regression) or saves one; merging shards, it exits 3 when a planned
shard or case is missing or a suite was refused. ``prepare PYTEST-ARGS`` trains or verifies the
base models a run needs; ``submit`` runs a run's shards as a Slurm job array (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import cluster
from .plugin import prepare
from .plugin.settings import BY_NAME, markdown_table
from .results import formats, gate, report
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
    cmd.add_argument("--tolerance", type=float, default=gate.DEFAULT_TOLERANCE_POINTS, help="allowed drop of mean top-1, percentage points (default 1)")
    cmd.add_argument("--tolerance-stds", type=float, default=gate.DEFAULT_TOLERANCE_STDS, help="allowed drop in stds over seeds (default 2); the larger allowance wins")
    cmd.add_argument("-q", "--quiet", action="store_true", help="do not print the Markdown leaderboard")
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
    try:
        rows, sources = report.read_rows(args.results)
        manifests = read_manifests(args.results)
    except ValueError as exc:
        print(f"pytest-shrinkbench report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not rows:
        print("pytest-shrinkbench report: no result rows in " + ", ".join(map(str, args.results)), file=sys.stderr)
        return EXIT_USAGE
    board = report.build(rows, sources=sources, title=args.title, manifests=manifests)
    written = formats.write(board, args.output, args.formats, plots=not args.no_plots)
    if not args.quiet:
        print(formats.to_markdown(board))
        print()
    print(f"read {len(rows)} rows from {len(sources)} source(s); {len(board.rows)} cases after merging")
    for name, path in written.items():
        print(f"wrote {path}")
    status = EXIT_OK
    if args.baseline is not None:
        try:
            expected, setup = gate.load_baseline(args.baseline)
        except ValueError as exc:
            print(f"pytest-shrinkbench report: {exc}", file=sys.stderr)
            return EXIT_USAGE
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["prepare"] and not {"-h", "--help"} & set(argv[1:]):
        return prepare.run(argv[1:])  # every argument is pytest's: argparse would take some for its own
    args = parser().parse_args(argv)
    if args.command == "report":
        return run_report(args)
    if args.command == "submit":
        return cluster.submit(args, main_report)
    if args.command == "options":
        print(markdown_table())
        return EXIT_OK
    return EXIT_USAGE  # pragma: no cover (argparse requires a command)


def main_report(args: list[str]) -> int:
    """``pytest-shrinkbench report ARGS`` (how ``submit --wait`` merges its shards)."""
    return main(["report", *args])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
