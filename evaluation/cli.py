"""`codeassist eval PATH... [--samples N] [--json] [--typing]`: the headless harness.

`codeassist eval --repo PATH [--repo PATH...] [--configs off,on]`: the repository-level eval
(evaluation/repo.py): line cases cut in a copy of each repository, opened as the server's workspace,
one fresh server per configuration, beside the copy heuristic on the same cases.

Starts the real language server over stdio, as an editor does, and scores what it suggests.
Top-level imports stay light (argparse only).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or folders to evaluate on")
    parser.add_argument("--repo", action="append", default=[], metavar="PATH",
                        help="a repository to evaluate as the server's workspace (repeatable)")
    parser.add_argument("--configs", default="off,on",
                        help="with --repo: server configurations, a comma list of off, on, copy, repo (default off,on)")
    parser.add_argument("--samples", type=int, default=None,
                        help="cursor positions to try (default 100; 200 per repository with --repo)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--typing", action="store_true",
                        help="type the first file character by character and report latency per keystroke")
    parser.add_argument("--chars", type=int, default=400, help="characters to type in --typing mode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-cache", action="store_true", help="switch the suggestion cache off")
    parser.add_argument("--no-prefix-reuse", action="store_true", help="prefill the whole prompt every time")
    parser.add_argument("--time-budget-ms", type=int, default=None,
                        help="generation budget per request (the server's timeBudgetMs; default 1500)")
    parser.add_argument("--cases", action="store_true", help="with --json: include every sample")
    parser.add_argument("--backend", default=None, choices=["local", "fake"], help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from codeassist.evaluation import harness
    from codeassist.evaluation.report import Report, TypingReport
    from codeassist.model.errors import UserError

    if bool(args.paths) == bool(args.repo):
        raise UserError("give either files or folders to evaluate (PATH...) or repositories (--repo PATH), not both or neither")
    if args.samples is None:
        args.samples = 200 if args.repo else 100
    if args.samples < 1 or args.chars < 1:
        raise UserError("--samples and --chars must be at least 1")
    cmd = harness.server_command(args.model, args.device, args.backend)
    settings: dict[str, object] = {"cache": not args.no_cache, "prefixReuse": not args.no_prefix_reuse}
    if args.time_budget_ms is not None:
        settings["timeBudgetMs"] = args.time_budget_ms
    if args.repo:
        return run_repos(args, cmd, settings)
    files = harness.collect_files(args.paths)
    if not files:
        raise UserError("no source files found under the given paths")
    options = {"codeassist": settings}
    try:
        if args.typing:
            report: Report | TypingReport = asyncio.run(
                harness.type_file(files[0], cmd, options, chars=args.chars, seed=args.seed))
        else:
            report = asyncio.run(harness.evaluate(files, args.samples, cmd, options, seed=args.seed))
    except RuntimeError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(report.to_dict(with_cases=args.cases), default=str, indent=2))
    elif isinstance(report, TypingReport):
        print(f"typed {report.keystrokes} characters of {files[0]}: {report.answered} requests answered")
        print(f"latency per keystroke request: p50 {report.p50_ms:.1f} ms, p95 {report.p95_ms:.1f} ms, "
              f"mean {report.mean_ms:.1f} ms; cache hits {report.cache_hits}; empty {report.empty_rate:.1%}")
    else:
        print(f"{report.samples} samples from {len(files)} files (model ready after {report.ready_s:.1f} s)")
        print(f"exact match {report.exact_match:.1%}, edit similarity {report.edit_similarity:.3f}, "
              f"empty {report.empty_rate:.1%}, latency p50 {report.p50_ms:.1f} ms, p95 {report.p95_ms:.1f} ms")
    return 0


def run_repos(args: argparse.Namespace, cmd: list[str], settings: dict[str, object]) -> int:
    import asyncio
    import json
    from pathlib import Path

    from codeassist.evaluation import repo as repo_eval
    from codeassist.model.errors import UserError

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in repo_eval.CONFIGS]
    if not configs or unknown:
        raise UserError(f"--configs takes a comma list of {', '.join(repo_eval.CONFIGS)}; got {args.configs!r}")
    if args.typing:
        raise UserError("--typing evaluates files, not repositories: drop --repo or --typing")
    roots = [Path(r) for r in args.repo]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise UserError(f"--repo takes a folder: {missing[0]} is not one")
    results = []
    for root in roots:
        try:
            results.append(asyncio.run(repo_eval.evaluate_repo(root, args.samples, args.seed, configs, cmd, settings)))
        except (RuntimeError, ValueError) as exc:
            raise UserError(str(exc)) from None
    means = repo_eval.mean_figures(results)
    if args.json:
        print(json.dumps({"repos": [{"repo": r.repo, "files": r.files,
                                     "rows": {n: rep.to_dict(with_cases=args.cases) for n, rep in r.rows.items()}}
                                    for r in results],
                          "mean": means}, default=str, indent=2))
        return 0
    for r in results:
        samples = next(iter(r.rows.values())).samples
        title = f"{r.repo}: {samples} lines from {r.files} files"
        print(repo_eval.format_table(title, {n: repo_eval.row_figures(rep) for n, rep in r.rows.items()}) + "\n")
    if len(results) > 1:
        print(repo_eval.format_table(f"mean of {len(results)} repositories", means))
    return 0
