"""The ``ocimirror`` command line, with the Pulp CLI's verbs.

JSON goes to stdout; progress and logs go to stderr; a failure prints one line and exits
non-zero (1 for an error, 2 for bad usage). ``repository sync`` exits 0 when every selected
tag was published, 3 when it was partial (the complete tags were published, the others are
listed under ``sync.dropped`` with their reasons) and 1 when it failed (nothing published).
"""

from __future__ import annotations

# Start-up is part of every command: ``--help`` and ``--version`` load no I/O library, and each
# verb imports what it needs when it runs (tests/test_startup.py holds this).
import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ocimirror._version import __version__
from ocimirror.errors import InvalidError, OcimirrorError

if TYPE_CHECKING:
    import logging

    from ocimirror.registry import AsyncRegistry
    from ocimirror.sync import SyncResult

__all__ = ["main"]

Handler = Callable[["AsyncRegistry", argparse.Namespace], Coroutine[Any, Any, Any]]


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def _print(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _patterns(values: list[str] | None) -> list[str] | None:
    """Repeated ``--include-tags P`` options, each a pattern or a JSON list (as Pulp's CLI)."""
    if values is None:
        return None
    patterns: list[str] = []
    for value in values:
        if value.lstrip().startswith("["):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise UsageError(f"not a JSON list: {value!r} ({exc.msg})") from None
            if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
                raise UsageError(f"expected a JSON list of strings: {value!r}")
            patterns.extend(parsed)
        else:
            patterns.append(value)
    return patterns


# -- repositories ------------------------------------------------------------------------------


async def repository_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.create_repository(
        args.name,
        description=args.description,
        retain_repo_versions=args.retain_repo_versions,
        remote=args.remote,
    )
    return repo.to_json()


async def repository_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [r.to_json() for r in await reg.repositories()]


async def repository_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.repository(args.name)).to_json()


async def repository_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {}
    if args.remote is not None:
        fields["remote"] = args.remote or None
    if args.retain_repo_versions is not None:
        fields["retain_repo_versions"] = args.retain_repo_versions or None
    if args.description is not None:
        fields["description"] = args.description
    repo = await reg.repository(args.name)
    return (await repo.update(**fields)).to_json()


async def repository_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_repository(args.name)
    return None


async def repository_version_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.repository)
    return [v.to_json() for v in await repo.versions()]


async def repository_version_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.repository)
    return (await repo.version(args.version)).to_json()


async def repository_version_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.repository)
    await repo.delete_version(args.version)
    return None


async def repository_version_diff(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.repository)
    return (await repo.diff(args.base_version, args.version)).to_json()


#: Exit statuses of ``repository sync``: every selected tag published; some tags dropped
#: (the complete ones were published); nothing published (an error, or every tag dropped).
EXIT_COMPLETE, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3


def _sync_problem(result: SyncResult) -> str | None:
    if result.ok:
        return None
    first = result.dropped[0]
    what = first.get("tag") or first.get("digest")
    return (
        f"{result.repository}: sync {result.status}, {len(result.dropped)} not published, "
        f"first {what}: {first['reason']}"
    )


def _sync_exit(results: list[SyncResult | BaseException]) -> int:
    if any(isinstance(r, BaseException) or r.status == "failed" for r in results):
        return EXIT_FAILED
    if any(not isinstance(r, BaseException) and r.status == "partial" for r in results):
        return EXIT_PARTIAL
    return EXIT_COMPLETE


async def repository_sync(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    from ocimirror.remote import SyncPolicy

    policy = SyncPolicy(
        mirror=args.mirror, allow_empty=args.allow_empty, signed_only=args.signed_only
    )
    from ocimirror.progress import SyncBars

    shown = not args.no_progress and sys.stderr.isatty()
    bars = SyncBars(combined=args.all)
    progress = bars if shown else False
    try:
        if args.all:
            results = await reg.sync_all(
                policy=policy,
                concurrency=args.concurrency,
                workers=args.workers,
                progress=progress,
            )
            out: list[dict[str, Any]] = []
            errors: list[str] = []
            for name, result in results.items():
                if isinstance(result, BaseException):
                    out.append({"repository": name, "error": f"{type(result).__name__}: {result}"})
                    errors.append(f"{name}: {result}")
                else:
                    out.append(result.to_json())
                    if (problem := _sync_problem(result)) is not None:
                        errors.append(problem)
            return _Partial(out, errors, _sync_exit(list(results.values())))
        if args.name is None:
            raise UsageError("repository sync needs --name NAME or --all")
        if args.workers is not None:
            raise UsageError("--workers spreads the repositories of --all; one sync runs in one")
        repo = await reg.repository(args.name)
        result = await repo.sync(args.remote, policy=policy, progress=progress)
        problem = _sync_problem(result)
        return _Partial(result.to_json(), [problem] if problem else [], _sync_exit([result]))
    finally:
        bars.close()


class _Partial:
    """Output to print, then errors; ``status`` is the exit status (non-zero when errors)."""

    def __init__(self, data: Any, errors: list[str], status: int | None = None) -> None:
        self.data = data
        self.errors = errors
        self.status = (1 if errors else 0) if status is None else status


async def repository_import(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.name)
    return (await repo.import_layout(args.path, tags=args.tag or None)).to_json()


async def repository_export(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    repo = await reg.repository(args.name)
    report = await repo.export_layout(
        args.path, version=args.version, tags=args.tag or None, tar=args.tar, fetch=args.fetch
    )
    return {
        "path": report.path,
        "tags": report.tags,
        "manifests": report.manifests,
        "blobs": report.blobs,
    }


# -- remotes -----------------------------------------------------------------------------------


def _remote_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in (
        "url",
        "upstream_name",
        "sigstore",
        "policy",
        "username",
        "password",
        "tls_validation",
        "proxy_url",
        "download_concurrency",
        "max_retries",
        "rate_limit",
    ):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    for name in ("include_tags", "exclude_tags"):
        patterns = _patterns(getattr(args, name, None))
        if patterns is not None:
            fields[name] = tuple(patterns)
    if getattr(args, "ca_cert", None) is not None:
        from pathlib import Path

        fields["ca_cert"] = Path(args.ca_cert).read_text() if args.ca_cert else None
    if getattr(args, "platforms", None) is not None:
        fields["platforms"] = tuple(p for p in args.platforms if p)
    for option, field in (
        ("trust_gpg_key", "trusted_gpg_keys"),
        ("trust_cosign_key", "trusted_cosign_keys"),
    ):
        files = getattr(args, option, None)
        if files is not None:
            fields[field] = _key_files(files)
    return fields


def _key_files(paths: list[str]) -> tuple[bytes, ...]:
    """The keys in the files of repeated ``--trust-*-key FILE`` options (``""`` alone: none)."""
    from pathlib import Path

    try:
        return tuple(Path(path).read_bytes() for path in paths if path)
    except OSError as exc:
        raise UsageError(f"cannot read key file {exc.filename!r}: {exc.strerror}") from None


async def remote_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    from ocimirror.remote import Remote

    remote = Remote(name=args.name, **_remote_fields(args))
    return (await reg.create_remote(remote)).to_json()


async def remote_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [r.to_json() for r in await reg.remotes()]


async def remote_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.remote(args.name)).to_json()


async def remote_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.update_remote(args.name, **_remote_fields(args))).to_json()


async def remote_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_remote(args.name)
    return None


# -- distributions -----------------------------------------------------------------------------


async def distribution_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    dist = await reg.create_distribution(
        args.name,
        base_path=args.base_path,
        repository=args.repository,
        repository_version=None if args.version == "latest" else args.version,
        private=args.private,
        description=args.description,
    )
    return dist.to_json()


async def distribution_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [d.to_json() for d in await reg.distributions()]


async def distribution_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.distribution(args.name)).to_json()


async def distribution_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    fields: dict[str, Any] = {}
    if args.base_path is not None:
        fields["base_path"] = args.base_path
    if args.repository is not None:
        fields["repository"] = args.repository or None
        fields["repository_version"] = None if args.version == "latest" else args.version
    elif args.version == "latest":
        fields["repository_version"] = None
    elif args.version is not None:  # a rollback: pin (and check) the version it serves
        fields["repository"] = (await reg.distribution(args.name)).repository
        if fields["repository"] is None:
            raise UsageError(f"distribution {args.name!r} serves no repository: give --repository")
        fields["repository_version"] = args.version
    if args.private is not None:
        fields["private"] = args.private
    if args.description is not None:
        fields["description"] = args.description
    return (await reg.update_distribution(args.name, **fields)).to_json()


async def distribution_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_distribution(args.name)
    return None


# -- users -----------------------------------------------------------------------------------


def _password(args: argparse.Namespace) -> str | None:
    """``--password P`` or ``--password-stdin`` (one line, as ``docker login`` reads it)."""
    if not getattr(args, "password_stdin", False):
        password: str | None = args.password
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin read no password")
    return password


async def user_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    password = _password(args)
    if password is None:
        raise UsageError("user create needs --password P or --password-stdin")
    return (await reg.create_user(args.username, password=password, admin=args.admin)).to_json()


async def user_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    user = await reg.update_user(args.username, password=_password(args), admin=args.admin)
    return user.to_json()


async def user_grant(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.grant(args.username, args.base_path, args.role)).to_json()


async def user_revoke(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.revoke(args.username, args.base_path)).to_json()


async def user_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [u.to_json() for u in await reg.users()]


async def user_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.user(args.username)).to_json()


async def user_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_user(args.username)
    return None


# -- maintenance -------------------------------------------------------------------------------


async def orphan_cleanup(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    from datetime import timedelta

    report = await reg.orphan_cleanup(grace=timedelta(seconds=args.protection_time))
    return report.to_json()


async def repair(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    report = await reg.repair()
    return _Partial(report.to_json(), [] if report.ok else ["repair found damaged content"])


# -- the parser --------------------------------------------------------------------------------


class _Policies:
    """``--policy``'s choices: :data:`ocimirror.remote.POLICIES`, read when argparse checks a
    value or prints them, so building the parser imports no model module."""

    def _all(self) -> tuple[str, ...]:
        from ocimirror.remote import POLICIES

        return POLICIES

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _version_or_latest(text: str) -> int | str:
    if text == "latest":
        return text
    if text.isascii() and text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a version number or 'latest', got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="ocimirror", description="Mirror and host container images."
    )
    parser.add_argument("--home", help="data directory (env OCIMIRROR_HOME)")
    parser.add_argument("--database-url", help="metadata database (env OCIMIRROR_DATABASE_URL)")
    parser.add_argument("--storage-url", help="blob storage (env OCIMIRROR_STORAGE_URL)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs on stderr")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def verb(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        return p

    # repository
    repo = groups.add_parser("repository", help="repositories and their versions")
    rs = repo.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = verb(rs, "create", repository_create, "create a repository")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--remote", help="the remote a sync uses by default")
    p.add_argument("--retain-repo-versions", type=_positive_int)
    verb(rs, "list", repository_list, "list repositories").set_defaults(lists_all=True)
    for name, handler in (("show", repository_show), ("destroy", repository_destroy)):
        verb(rs, name, handler, f"{name} a repository").add_argument("--name", required=True)
    p = verb(rs, "update", repository_update, "change a repository")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--remote", help="'' forgets the remote")
    p.add_argument("--retain-repo-versions", type=_positive_int, help="0 keeps every version")
    p = verb(rs, "sync", repository_sync, "sync from a remote")
    p.add_argument("--name")
    p.add_argument("--all", action="store_true", help="every repository that has a remote")
    p.add_argument("--remote", help="default: the repository's own remote")
    p.add_argument("--mirror", action="store_true", help="remove what upstream no longer has")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="let a mirror sync publish no tag (filters matching nothing, an emptied upstream)",
    )
    p.add_argument("--signed-only", action="store_true", help="skip images that have no signature")
    p.add_argument("--concurrency", type=int, default=32, help="shared budget with --all")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --all: event loops (this process and N-1 worker processes) that share the "
        "repositories; default: one per core",
    )
    p.add_argument("--no-progress", action="store_true")
    p = verb(rs, "import", repository_import, "import an OCI image layout (dir or tar)")
    p.add_argument("--name", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--tag", action="append", help="only these tags (repeat)")
    p = verb(rs, "export", repository_export, "export a version to an OCI image layout")
    p.add_argument("--name", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--version", type=int)
    p.add_argument("--tag", action="append", help="only these tags (repeat)")
    p.add_argument("--tar", action="store_true")
    p.add_argument(
        "--fetch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fetch on-demand content from its remote (default); --no-fetch fails naming it",
    )
    version = rs.add_parser("version", help="repository versions")
    vs = version.add_subparsers(dest="version_verb", required=True, metavar="VERB")
    verb(vs, "list", repository_version_list, "list versions, newest first").add_argument(
        "--repository", required=True
    )
    for name, handler in (
        ("show", repository_version_show),
        ("destroy", repository_version_destroy),
    ):
        p = verb(vs, name, handler, f"{name} a version")
        p.add_argument("--repository", required=True)
        p.add_argument("--version", type=int, required=True)
    p = verb(vs, "diff", repository_version_diff, "what changed between two versions (JSON)")
    p.add_argument("--repository", required=True)
    p.add_argument("--base-version", type=int, required=True)
    p.add_argument("--version", type=int, help="default: the latest")

    # remote
    remote = groups.add_parser("remote", help="where content comes from")
    ms = remote.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler in (("create", remote_create), ("update", remote_update)):
        p = verb(ms, name, handler, f"{name} a remote")
        p.add_argument("--name", required=True)
        p.add_argument("--url", required=name == "create")
        p.add_argument("--upstream-name", required=name == "create")
        p.add_argument("--include-tags", action="append", metavar="PATTERN")
        p.add_argument("--exclude-tags", action="append", metavar="PATTERN")
        p.add_argument("--sigstore")
        p.add_argument(
            "--policy", choices=_Policies(), metavar="POLICY", help="one of: %(choices)s"
        )
        p.add_argument("--username")
        p.add_argument("--password")
        p.add_argument("--tls-validation", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--ca-cert", metavar="FILE")
        p.add_argument("--proxy-url")
        p.add_argument("--download-concurrency", type=int)
        p.add_argument("--max-retries", type=int)
        p.add_argument("--rate-limit", type=float)
        p.add_argument(
            "--platform",
            action="append",
            dest="platforms",
            metavar="OS/ARCH[/VARIANT]",
            help="download only these platforms of an index, keeping its digest (repeatable; "
            "on update replaces the list, '' clears it)",
        )
        p.add_argument(
            "--trust-gpg-key",
            action="append",
            metavar="FILE",
            help="an ASCII-armored GPG public key: atomic signatures must verify against one "
            "of these (repeatable; on update replaces the list, '' clears it)",
        )
        p.add_argument(
            "--trust-cosign-key",
            action="append",
            metavar="FILE",
            help="a PEM public key: cosign signatures must verify against one of these "
            "(repeatable; on update replaces the list, '' clears it)",
        )
    verb(ms, "list", remote_list, "list remotes").set_defaults(lists_all=True)
    for name, handler in (("show", remote_show), ("destroy", remote_destroy)):
        verb(ms, name, handler, f"{name} a remote").add_argument("--name", required=True)

    # distribution
    dist = groups.add_parser("distribution", help="base paths that serve repositories")
    ds = dist.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler in (("create", distribution_create), ("update", distribution_update)):
        p = verb(ds, name, handler, f"{name} a distribution")
        p.add_argument("--name", required=True)
        p.add_argument("--base-path", required=name == "create")
        p.add_argument("--repository", required=name == "create")
        p.add_argument(
            "--version",
            type=_version_or_latest,
            help="pin to version N (a rollback); 'latest' follows the latest again",
        )
        p.add_argument("--private", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--description")
    verb(ds, "list", distribution_list, "list distributions").set_defaults(lists_all=True)
    for name, handler in (("show", distribution_show), ("destroy", distribution_destroy)):
        verb(ds, name, handler, f"{name} a distribution").add_argument("--name", required=True)
    from ocimirror.cli_pullthrough import add_pull_through_verbs

    add_pull_through_verbs(ms, ds, verb)

    # user
    user = groups.add_parser("user", help="users of the registry API and their grants")
    us = user.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, handler in (("create", user_create), ("update", user_update)):
        p = verb(us, name, handler, f"{name} a user")
        p.add_argument("--username", required=True)
        secret = p.add_mutually_exclusive_group()
        secret.add_argument("--password", help="prefer --password-stdin: argv is visible")
        secret.add_argument("--password-stdin", action="store_true", help="read one line")
        p.add_argument(
            "--admin",
            action=argparse.BooleanOptionalAction,
            default=False if name == "create" else None,
            help="may do everything",
        )
    p = verb(us, "grant", user_grant, "let a user pull or push on base paths")
    p.add_argument("--username", required=True)
    p.add_argument("--base-path", required=True, metavar="PATTERN", help="wildcards: team/*")
    p.add_argument("--role", required=True, choices=("pull", "push"), help="push implies pull")
    p = verb(us, "revoke", user_revoke, "take back a user's grant on a pattern")
    p.add_argument("--username", required=True)
    p.add_argument("--base-path", required=True, metavar="PATTERN")
    verb(us, "list", user_list, "list users").set_defaults(lists_all=True)
    for name, handler in (("show", user_show), ("destroy", user_destroy)):
        verb(us, name, handler, f"{name} a user").add_argument("--username", required=True)

    # maintenance
    orphans = groups.add_parser("orphan", help="content no repository version holds")
    os_ = orphans.add_subparsers(dest="verb", required=True, metavar="VERB")
    verb(os_, "cleanup", orphan_cleanup, "delete orphan content").add_argument(
        "--protection-time", type=float, default=3600.0, metavar="SECONDS"
    )
    verb(groups, "repair", repair, "re-verify every stored blob and manifest")

    # serve
    p = groups.add_parser("serve", help="serve the registry API (pull and push)")
    p.set_defaults(handler=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=24817)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--certfile", help="serve HTTPS with this certificate (and --keyfile)")
    p.add_argument("--keyfile")
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without authentication: anyone may pull and push (local development only)",
    )
    p.add_argument(
        "--token-key",
        metavar="PEM",
        help="the token signing key (EC P-256); default: token-key.pem in the home",
    )
    p.add_argument(
        "--token-realm",
        metavar="URL",
        help="the token endpoint's URL as clients reach it (behind a proxy)",
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    from ocimirror.server.serve import serve

    serve(
        host=args.host,
        port=args.port,
        workers=args.workers,
        certfile=args.certfile,
        keyfile=args.keyfile,
        home=args.home,
        database_url=args.database_url,
        storage_url=args.storage_url,
        log_level=args.log_level,
        auth=not args.no_auth,
        token_key=args.token_key,
        token_realm=args.token_realm,
    )
    return 0


def _nothing_to_list(args: argparse.Namespace) -> bool:
    """A listing of everything of a kind on a home where nothing was ever stored: there is
    nothing to list, and a read creates no database (nor pays for the database layer)."""
    if not getattr(args, "lists_all", False):
        return False
    from ocimirror.config import Config

    config = Config.resolve(
        home=args.home, database_url=args.database_url, storage_url=args.storage_url
    )
    return config.unused


def _run_in_loop(args: argparse.Namespace) -> Any:
    import asyncio

    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> Any:
    from ocimirror.registry import AsyncRegistry

    registry = await AsyncRegistry.open(
        home=args.home, database_url=args.database_url, storage_url=args.storage_url
    )
    if args.own_process:
        from ocimirror._process import settle

        settle()  # the stores' modules are imported: they live as long as the command
    try:
        return await args.handler(registry, args)
    finally:
        await registry.close()


def _redact_record(record: logging.LogRecord) -> bool:
    """Show every log line on stderr with URLs cut to scheme, host and path."""
    message = record.getMessage()
    if "://" not in message:  # no URL to cut: spare the line the upstream package's import
        return True
    from ocimirror.upstream import redact_text

    redacted = redact_text(message)
    if redacted != message:
        record.msg, record.args = redacted, None
    return True


def main(argv: Sequence[str] | None = None, *, own_process: bool = False) -> int:
    """Run the command line; returns the exit status.

    ``own_process``: the process is the command's alone (:func:`console`), so it may
    :func:`~ocimirror._process.settle` what it imported; not when ``main`` is called from
    another program, a test among them.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.own_process = own_process
    if getattr(args, "private", None) is None and args.group == "distribution":
        args.private = False if args.verb == "create" else None
    import logging

    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosqlite's debug lines carry SQL parameters, password hashes among them.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    # httpx and httpcore log whole URLs: a redirect's signed query string must not show.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_record)
    try:
        if args.group == "serve":
            return _serve(args)
        result = [] if _nothing_to_list(args) else _run_in_loop(args)
    except UsageError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except (OcimirrorError, InvalidError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    if isinstance(result, _Partial):
        _print(result.data)
        for line in result.errors:
            print(f"Error: {line}", file=sys.stderr)
        return result.status
    if result is not None:
        _print(result)
    return 0


def console() -> None:
    """The ``ocimirror`` command, and ``python -m ocimirror``: :func:`main` in a process of its
    own, which then exits without walking its imported modules once more."""
    status = main(own_process=True)
    from ocimirror._process import settle

    settle()
    sys.exit(status)


if __name__ == "__main__":
    console()
