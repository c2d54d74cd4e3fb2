"""The `beast` command. Every refusal is one line on stderr and exit 1; usage errors exit 2.

Reading commands take `--json` and then print one JSON document on stdout. The seed's
spellings (`beast deploy --status`, `--rollback [V]`, `--promote NAME`) are accepted too.
Whatever quotes a name, a path or a stored text is escaped (`engine.core.text`): output is one
line per line, never a terminal control.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.cli import alerts as cli_alerts
from engine.cli import console as cli_console
from engine.cli import migrate as cli_migrate
from engine.cli import mlflow as cli_mlflow
from engine.cli import render
from engine.cli import replay as cli_replay
from engine.cli import retrain as cli_retrain
from engine.cli import rollout as cli_rollout
from engine.cli import serving as cli_serving
from engine.cli import simulate as cli_simulate
from engine.core import text
from engine.core.errors import BeastError
from engine.core.records import Change, Expect
from engine.core.workspace import ENV_VAR, Workspace
from engine.facade import Engine
from engine.store.opening import store_url
from engine.store.sqlite.backup import backup, restore

Handler = Callable[[Engine, argparse.Namespace], int]


def _print_json(document: Any) -> None:
    sys.stdout.write(text.dumps(document) + "\n")


def _common() -> argparse.ArgumentParser:
    # Accepted before or after the subcommand; SUPPRESS keeps the top-level value otherwise.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        "-w",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"workspace directory (default: ${ENV_VAR} or ./.beast-mode)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    return common


def _mutation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--note", help="why (kept in history)")
    parser.add_argument(
        "--expect",
        metavar="VERSION",
        help="refuse unless production is still VERSION (what you saw)",
    )
    parser.add_argument(
        "--expect-revision",
        type=int,
        metavar="N",
        help="refuse unless the line's state revision is still N",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _expect(args: argparse.Namespace) -> Expect | None:
    if args.expect is None and args.expect_revision is None:
        return None
    return Expect(production=args.expect, revision=args.expect_revision)


def _report(change: Change, args: argparse.Namespace) -> int:
    if args.json:
        _print_json(change.to_json())
    else:
        print(text.escape(change.message))
    return 0


def cmd_init(engine: Engine, args: argparse.Namespace) -> int:
    if args.reset and not args.demo:
        raise BeastError("--reset rebuilds the demo workspace: use it with --demo")
    if args.demo:
        from engine.demo import workspace as demo  # numpy and XGBoost: only the demo trains

        if not args.json:
            print("building the demo workspace: training 5 versions of 2 lines…", flush=True)
        result = demo.reset(engine.workspace) if args.reset else demo.build(engine.workspace)
        if args.json:
            _print_json(
                {
                    "workspace": str(result.workspace),
                    "data": str(result.data),
                    "models": [str(p) for p in result.models],
                }
            )
        else:
            print(
                text.escape(f"demo workspace {result.workspace} (generated data, labelled demo):")
            )
            print(text.escape(f"  data   {result.data}"))
            for path in result.models:
                print(text.escape(f"  model  {path}"))
            print(f"  production v1-enhanced, A/B test {demo.DEMO_TEST}: v3-advanced at 10%")
        return 0
    _, created = Engine.init(engine.workspace)
    if args.json:
        _print_json({"workspace": str(engine.workspace.root), "created": [str(p) for p in created]})
    elif created:
        print(text.escape(f"initialised {engine.workspace.root}"))
        for path in created:
            print(text.escape(f"  created {path}"))
    else:
        print(text.escape(f"{engine.workspace.root} is already initialised"))
    return 0


def cmd_status(engine: Engine, args: argparse.Namespace) -> int:
    report = engine.status()
    leader = engine.leader()
    if args.json:
        _print_json(dict(report.to_json(), leader=leader.to_json() if leader else None))
    else:
        print(render.status(report))
        if leader is not None:
            print(render.leader(leader))
    return 0


def cmd_deploy(engine: Engine, args: argparse.Namespace) -> int:
    seed_forms = [args.status, args.rollback is not None, args.promote is not None]
    if sum(seed_forms) > 1 or (any(seed_forms) and args.path):
        raise _Usage("use one of PATH, --status, --rollback [V] or --promote NAME")
    if args.status:
        return cmd_status(engine, args)
    if args.rollback is not None:
        args.version_target = args.rollback or None
        return cmd_rollback(engine, args)
    if args.promote is not None:
        args.name = args.promote
        return cmd_promote(engine, args)
    if args.shadow_stop or args.shadow or args.shadow_traffic is not None:
        return _deploy_shadow(engine, args)
    if args.path is None and args.version is None:
        raise _Usage("deploy needs a model file PATH (or --version V of a registered one)")
    checked = cli_replay.preflight(engine, args)
    change = engine.deploy(
        args.path,
        version=args.version,
        model=args.model,
        traffic=args.traffic,
        ab_test=args.ab_test,
        note=args.note,
        expect=_expect(args),
        reference=args.reference,
        rollout=args.rollout,
    )
    return cli_replay.report(change, args, checked)


def _deploy_shadow(engine: Engine, args: argparse.Namespace) -> int:
    """`beast deploy … --shadow [--shadow-traffic P]` and `beast deploy --shadow-stop`."""
    if args.shadow_stop:
        if args.path or args.shadow or args.version:
            raise _Usage("--shadow-stop takes no PATH, --version or --shadow (use --model LINE)")
        return _report(
            engine.shadow_stop(model=args.model, note=args.note, expect=_expect(args)), args
        )
    if args.path is None and args.version is None:
        raise _Usage("deploy needs a model file PATH (or --version V of a registered one)")
    if not args.shadow:
        raise _Usage("--shadow-traffic needs --shadow")
    if args.ab_test or args.traffic is not None or args.reference:
        raise _Usage("--shadow takes no --ab-test, --traffic or --reference")
    change = engine.shadow(
        args.path,
        version=args.version,
        model=args.model,
        traffic=args.shadow_traffic,
        note=args.note,
        expect=_expect(args),
    )
    return _report(change, args)


def cmd_rollback(engine: Engine, args: argparse.Namespace) -> int:
    change = engine.rollback(
        args.version_target, model=args.model, note=args.note, expect=_expect(args)
    )
    return _report(change, args)


def cmd_promote(engine: Engine, args: argparse.Namespace) -> int:
    change = engine.promote(args.name, force=args.force, note=args.note, expect=_expect(args))
    return _report(change, args)


def cmd_abort(engine: Engine, args: argparse.Namespace) -> int:
    return _report(engine.abort(args.name, note=args.note, expect=_expect(args)), args)


def cmd_history(engine: Engine, args: argparse.Namespace) -> int:
    entries = engine.history(args.model)
    if args.limit:
        entries = entries[-args.limit :]
    if args.json:
        _print_json([e.to_json() for e in entries])
    else:
        print(render.history_rows(entries))
    return 0


def cmd_models(engine: Engine, args: argparse.Namespace) -> int:
    report = engine.models()
    if args.json:
        _print_json(
            {
                "models": [
                    dict(
                        a.to_json(),
                        serving=[
                            report.serving[f"{a.line}/{v}"]
                            for v in a.versions
                            if f"{a.line}/{v}" in report.serving
                        ],
                        scorer=report.scorers.get(a.sha256, (None, None))[0],
                        scorer_reason=report.scorers.get(a.sha256, (None, None))[1],
                    )
                    for a in report.artifacts
                ],
                "unregistered": [{"path": p, "problem": r} for p, r in report.unregistered],
            }
        )
    else:
        print(render.models(report))
    return 0


def cmd_register(engine: Engine, args: argparse.Namespace) -> int:
    paths = args.paths or [
        str(engine.workspace.models_dir / p) for p, _ in engine.models().unregistered
    ]
    if (args.version or args.model or args.reference) and len(paths) != 1:
        raise _Usage("--version, --model and --reference name one file")
    results, failures = [], 0
    for path in paths:
        try:
            reg = engine.register(
                path, version=args.version, model=args.model, reference=args.reference
            )
        except BeastError as exc:
            failures += 1
            results.append({"path": path, "registered": False, "reason": str(exc)})
            if not args.json:
                print(text.escape(f"beast: {exc}"), file=sys.stderr)
            continue
        name = reg.version.name if reg.version else "-"
        results.append(
            {
                "path": path,
                "registered": True,
                "new": reg.new,
                "version": name,
                "line": reg.artifact.line,
                "sha256": reg.artifact.sha256,
                "reference": reg.reference,
            }
        )
        if not args.json:
            state = "registered" if reg.new else "already registered"
            shown = f"{state}: {reg.artifact.line}/{name} ({reg.artifact.sha256[:12]}) {path}"
            if reg.reference:
                shown += f"; baseline from reference {reg.reference}"
            print(text.escape(shown))
    if args.json:
        _print_json(results)
    elif not paths:
        print("nothing to register")
    return 1 if failures else 0


def _refuse_on_postgresql(engine: Engine, how: str) -> None:
    """backup and restore copy beast.db: a PostgreSQL store is the server's to dump."""
    if store_url(engine.workspace.root):
        raise BeastError(
            "this workspace's state is in PostgreSQL (BEAST_STORE_URL or [store] url), not "
            f"beast.db: {how}; nothing was done"
        )


def cmd_backup(engine: Engine, args: argparse.Namespace) -> int:
    _refuse_on_postgresql(engine, "back it up with `pg_dump -Fc -f FILE URL`")
    source = engine.workspace.db_path
    dest = backup(source, Path(args.dest).expanduser().absolute())
    if args.json:
        _print_json({"database": str(source), "backup": str(dest)})
    else:
        print(text.escape(f"backed up {source} to {dest} (SQLite backup API, integrity checked)"))
    return 0


def cmd_restore(engine: Engine, args: argparse.Namespace) -> int:
    _refuse_on_postgresql(
        engine, "restore a `pg_dump -Fc` file with `pg_restore --clean -d URL FILE`"
    )
    done = restore(engine.workspace, Path(args.backup), force=args.force)
    status, report = engine.status(), engine.doctor()
    if args.json:
        _print_json(dict(done.to_json(), status=status.to_json(), doctor=report.to_json()))
        return 0
    print(
        f"restored {done.backup} as {done.database} (integrity checked; {done.changes} "
        f"changes in its history{', adopted from another workspace' if done.adopted else ''})"
    )
    for path in done.kept:
        print(f"  kept what was there as {path}")
    if done.history_kept is not None:
        print(
            f"  history.json held {done.newer_changes} changes the backup lacks: "
            f"kept as {done.history_kept}"
        )
    print(render.status(status))
    for problem in report.problems:
        print(f"beast doctor: {problem}")
    return 0


def cmd_doctor(engine: Engine, args: argparse.Namespace) -> int:
    report = engine.doctor(repair=args.repair)
    if args.json:
        _print_json(report.to_json())
    else:
        print(render.doctor(report))
    if not report.ok:
        print(text.escape(f"beast: {report.problems[0]}"), file=sys.stderr)
    return 0 if report.ok else 1


def cmd_engine(engine: Engine, args: argparse.Namespace) -> int:
    """The headless engine: the HTTP API on uvicorn until SIGTERM (engine/server/daemon.py)."""
    from engine.server import daemon  # logging.config, sockets (~45 ms): `beast engine` only

    engine.close()  # the daemon opens its own connections, one per thread that needs one
    options = daemon.EngineOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level=args.log_level,
        evaluate_every_s=args.evaluate_every,
        watch=args.watch,
        rescan_every_s=args.rescan_every,
        retrain_check_every_s=args.retrain_check_every,
        allowed_hosts=tuple(args.allowed_host),
    )
    return daemon.serve(engine.workspace, options)


_REFERENCE_HELP = (
    "labelled CSV or Parquet (the line's features and label): scored by the model, its "
    "metrics and drift reference become the version's baseline"
)


class _Usage(Exception):
    """A usage error found after parsing (exit 2, like argparse's own)."""


def _add_deploy_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("deploy", cmd_deploy, "deploy a model: production at 100%, or an A/B candidate")
    p.add_argument("path", nargs="?", help="model file in the workspace's models/ (.json/.ubj)")
    p.add_argument("--version", help="version name (default: from the file name)")
    p.add_argument("--model", help="model line (default: from the file name, or the only one)")
    p.add_argument("--traffic", type=float, metavar="N", help="candidate share in percent, 1–99")
    p.add_argument("--ab-test", metavar="NAME", help="start A/B test NAME with this candidate")
    p.add_argument(
        "--rollout",
        type=cli_rollout.rollout_percents,
        metavar="STEPS",
        help="with --ab-test: a progressive rollout, rising shares ending at 100 (5,25,50,100)",
    )
    p.add_argument("--status", action="store_true", help="seed spelling of `beast status`")
    p.add_argument(
        "--rollback", nargs="?", const="", metavar="V", help="seed spelling of `beast rollback [V]`"
    )
    p.add_argument("--promote", metavar="NAME", help="seed spelling of `beast promote NAME`")
    p.add_argument("--reference", metavar="FILE", help=_REFERENCE_HELP)
    p.add_argument("--force", action="store_true", help="with --promote: promote without a verdict")
    p.add_argument(
        "--shadow",
        action="store_true",
        help="score this version beside production on its requests, never serving it",
    )
    p.add_argument(
        "--shadow-traffic",
        type=float,
        metavar="P",
        help="with --shadow: the share of production's requests scored, in percent (default 100)",
    )
    p.add_argument(
        "--shadow-stop", action="store_true", help="end the running shadow of --model LINE"
    )
    cli_replay.add_deploy_options(p)
    _mutation_options(p)


def _add_engine_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "engine",
        cmd_engine,
        "headless engine: HTTP API (127.0.0.1:8787), model watcher, alerts, retraining checks",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; beyond loopback needs a token"
    )
    p.add_argument("--port", type=int, default=8787, help="TCP port (default 8787)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument(
        "--evaluate-every",
        type=float,
        default=30.0,
        metavar="S",
        help="run the monitoring evaluation (alerts, auto-pull) every S seconds; 0: never",
    )
    p.add_argument(
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="register model files that appear in models/ (default: on)",
    )
    p.add_argument(
        "--rescan-every",
        type=float,
        default=30.0,
        metavar="S",
        help="rescan models/ in full every S seconds (file events are only hints)",
    )
    p.add_argument(
        "--retrain-check-every",
        type=float,
        default=300.0,
        metavar="S",
        help="check the retraining triggers every S seconds; 0: never",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host is NAME[:PORT] (repeatable; beside localhost, "
        "127.0.0.1, [::1], --host and [api] allowed_hosts); any other Host gets 421",
    )


def _add_backup_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("backup", cmd_backup, "copy the state database to DEST (SQLite backup API)")
    p.add_argument("dest", metavar="DEST", help="a new file for the copy (never overwritten)")
    p.add_argument("--json", action="store_true")

    p = add(
        "restore",
        cmd_restore,
        "put a `beast backup` file back as the workspace's database (the engine must be stopped)",
    )
    p.add_argument("backup", metavar="BACKUP", help="a file `beast backup` wrote")
    p.add_argument(
        "--force", action="store_true", help="adopt a backup of another workspace as this one's"
    )
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="beast",
        parents=[common],
        description="Deploy, A/B test, monitor and retrain XGBoost score models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        # argparse %-formats help strings (not descriptions): "100%" must be escaped there.
        p = sub.add_parser(
            name, parents=[common], help=help_text.replace("%", "%%"), description=help_text, **kw
        )
        p.set_defaults(handler=handler)
        return p

    p = add("init", cmd_init, "create the workspace (config.toml, models/, deployments/, data/)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="also generate demo data, train three versions, deploy and start a test",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="with --demo: delete the demo workspace (only one --demo built) and build it anew",
    )
    p.add_argument("--json", action="store_true")

    _add_deploy_parser(add)

    p = add("status", cmd_status, "what serves: versions, roles, traffic, tests, since, by whom")
    p.add_argument("--json", action="store_true")

    p = add("rollback", cmd_rollback, "back to the production before the last change, or to V")
    p.add_argument("version_target", nargs="?", metavar="V", help="a registered version")
    p.add_argument("--model", help="model line")
    _mutation_options(p)

    p = add(
        "promote", cmd_promote, "make an A/B test's candidate production (alias ab-winner-NAME)"
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--force", action="store_true", help="promote without a winning verdict")
    _mutation_options(p)

    p = add("abort", cmd_abort, "end an A/B test: candidate to 0%, production back to 100%")
    p.add_argument("name", metavar="NAME")
    _mutation_options(p)

    p = add("history", cmd_history, "who changed what, when, from → to, why")
    p.add_argument("--model", help="only this model line")
    p.add_argument("--limit", type=int, metavar="N", help="only the last N rows")
    p.add_argument("--json", action="store_true")

    p = add("models", cmd_models, "artifacts: valid or rejected and why, and which serve")
    p.add_argument("--json", action="store_true")

    p = add(
        "register", cmd_register, "validate and register model files (default: all new in models/)"
    )
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--version")
    p.add_argument("--model")
    p.add_argument("--reference", metavar="FILE", help=_REFERENCE_HELP)
    p.add_argument("--json", action="store_true")

    _add_backup_parsers(add)

    cli_serving.add_parsers(add)
    cli_retrain.add_parsers(add)
    cli_rollout.add_parsers(add)
    cli_simulate.add_parsers(add)
    cli_replay.add_parsers(add)
    cli_mlflow.add_parsers(add)
    cli_migrate.add_parsers(add)
    cli_console.add_parsers(add)
    cli_alerts.add_parsers(add)

    _add_engine_parser(add)

    p = add("doctor", cmd_doctor, "check the state invariants (exit 1 naming a broken one)")
    p.add_argument("--repair", action="store_true", help="rewrite a stale history.json first")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    workspace = Workspace.locate(getattr(args, "workspace", None))
    engine = Engine(workspace)
    try:
        builds = args.command in ("init", "restore") or getattr(args, "demo", False)
        if not builds:  # init and the demo build one; restore may be a workspace's first step
            workspace.require()
        # doctor examines what the store refuses; migrate reads beast.db whatever the URL
        if not builds and args.command not in ("doctor", "migrate"):
            engine.store  # noqa: B018 - a lost or swapped database is refused by every command
        return int(args.handler(engine, args))
    except _Usage as exc:
        parser.print_usage(sys.stderr)
        print(text.escape(f"beast {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except BeastError as exc:
        if debug:
            raise
        print(text.escape(f"beast: {exc}"), file=sys.stderr)
        return 1
    except BrokenPipeError:
        sys.stderr.close()  # `beast history | head` is not an error
        return 0
    except KeyboardInterrupt:
        print("beast: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(
            text.escape(
                f"beast: internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                "the traceback)"
            ),
            file=sys.stderr,
        )
        return 1
    finally:
        engine.close()


if __name__ == "__main__":
    raise SystemExit(main())
