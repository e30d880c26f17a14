"""The ``remote pull-through`` and ``distribution pull-through`` verbs (Pulp CLI's names)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ocimirror.cli import Handler
    from ocimirror.registry import AsyncRegistry

__all__ = ["add_pull_through_verbs"]


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated ``--include-names P``; one ``''`` clears the list."""
    if values is None:
        return None
    return tuple(v for v in values if v)


def _remote_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("url", "username", "password", "tls_validation", "proxy_url"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    for name in ("include_names", "exclude_names"):
        names = _names(getattr(args, name, None))
        if names is not None:
            fields[name] = names
    return fields


async def remote_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    remote = await reg.create_pull_through_remote(name=args.name, **_remote_fields(args))
    return remote.to_json()


async def remote_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.update_pull_through_remote(args.name, **_remote_fields(args))).to_json()


async def remote_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [r.to_json() for r in await reg.pull_through_remotes()]


async def remote_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.pull_through_remote(args.name)).to_json()


async def remote_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_pull_through_remote(args.name)
    return None


def _dist_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in ("private", "description", "check_interval", "max_size", "max_age"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    return fields


async def distribution_create(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    dist = await reg.create_pull_through_distribution(
        args.name, base_path=args.base_path, remote=args.remote, **_dist_fields(args)
    )
    return dist.to_json()


async def distribution_update(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    fields = _dist_fields(args)
    if args.base_path is not None:
        fields["base_path"] = args.base_path
    if args.remote is not None:
        fields["remote"] = args.remote
    return (await reg.update_pull_through_distribution(args.name, **fields)).to_json()


async def distribution_list(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return [d.to_json() for d in await reg.pull_through_distributions()]


async def distribution_show(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    return (await reg.pull_through_distribution(args.name)).to_json()


async def distribution_destroy(reg: AsyncRegistry, args: argparse.Namespace) -> Any:
    await reg.delete_pull_through_distribution(args.name)
    return None


def add_pull_through_verbs(
    remotes: Any,
    distributions: Any,
    verb: Callable[[Any, str, Handler, str], argparse.ArgumentParser],
) -> None:
    """``remote pull-through VERB`` and ``distribution pull-through VERB``."""
    rp = remotes.add_parser("pull-through", help="remotes of whole registries, for caches")
    rs = rp.add_subparsers(dest="pull_through_verb", required=True, metavar="VERB")
    for name, handler in (("create", remote_create), ("update", remote_update)):
        p = verb(rs, name, handler, f"{name} a pull-through remote")
        p.add_argument("--name", required=True)
        p.add_argument("--url", required=name == "create")
        p.add_argument("--include-names", action="append", metavar="PATTERN")
        p.add_argument("--exclude-names", action="append", metavar="PATTERN")
        p.add_argument("--username")
        p.add_argument("--password")
        p.add_argument("--tls-validation", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--proxy-url")
    verb(rs, "list", remote_list, "list pull-through remotes").set_defaults(lists_all=True)
    for name, handler in (("show", remote_show), ("destroy", remote_destroy)):
        verb(rs, name, handler, f"{name} a pull-through remote").add_argument(
            "--name", required=True
        )

    dp = distributions.add_parser("pull-through", help="base paths that cache a registry")
    ds = dp.add_subparsers(dest="pull_through_verb", required=True, metavar="VERB")
    for name, handler in (("create", distribution_create), ("update", distribution_update)):
        p = verb(ds, name, handler, f"{name} a pull-through distribution")
        p.add_argument("--name", required=True)
        p.add_argument("--base-path", required=name == "create")
        p.add_argument("--remote", required=name == "create", help="a pull-through remote")
        p.add_argument("--private", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--description")
        p.add_argument(
            "--check-interval",
            type=float,
            metavar="SECONDS",
            help="check a cached tag upstream at most this often (default 300)",
        )
        p.add_argument("--max-size", type=int, metavar="BYTES", help="evict beyond this")
        p.add_argument("--max-age", type=float, metavar="SECONDS", help="evict tags older")
    verb(ds, "list", distribution_list, "list pull-through distributions").set_defaults(
        lists_all=True
    )
    for name, handler in (("show", distribution_show), ("destroy", distribution_destroy)):
        verb(ds, name, handler, f"{name} a pull-through distribution").add_argument(
            "--name", required=True
        )
