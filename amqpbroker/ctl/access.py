"""``ctl users``, ``ctl permissions``, ``ctl topic-permissions`` and ``ctl cluster-name``:
who may do what, as rabbitmqctl's ``add_user``, ``delete_user``, ``change_password``,
``set_user_tags``, ``list_users``, ``set_permissions``, ``clear_permissions``,
``list_permissions``, ``list_user_permissions``, ``set_topic_permissions``,
``clear_topic_permissions``, ``list_topic_permissions`` and ``set_cluster_name`` (through
``/api/users``, ``/api/permissions``, ``/api/topic-permissions``, ``/api/cluster-name``:
administrators only, as there).

A password is read from ``--password-stdin`` (or the ``AMQPBROKER_CTL_NEW_PASSWORD``
environment variable), never from the command line where ``ps`` would show it.
"""
from __future__ import annotations

import functools
import os
import sys

from .api import Refused, Usage, add_output_flags, emit, q, say, vhost

USER_COLUMNS = ("name", "tags")
PERMISSION_COLUMNS = ("user", "vhost", "configure", "write", "read")
TOPIC_COLUMNS = ("user", "vhost", "exchange", "write", "read")
NEW_PASSWORD = "AMQPBROKER_CTL_NEW_PASSWORD"


def _password(args) -> str | None:
    """The new password: stdin's first line, or the environment's; None for none."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return os.environ.get(NEW_PASSWORD)


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ------------------------------------------------------------------ users
def list_users(api, args) -> None:
    users = api.call("GET", "/api/users?sort=name")
    emit([{**u, "tags": ",".join(u.get("tags") or [])} for u in users], args)


def _user(api, name: str) -> dict | None:
    return api.call("GET", f"/api/users/{q(name)}", ok=(404,)) or None


def add_user(api, args) -> None:
    password = _password(args)
    if password is None and not args.no_password:
        raise Usage(f"give the password on stdin (--password-stdin) or in {NEW_PASSWORD}, "
                    f"or say --no-password")
    body = {"tags": ",".join(_tags(args.tags))}
    if password is None:
        body["password_hash"] = ""      # no password: it cannot log in with one
    else:
        body["password"] = password
    api.call("PUT", f"/api/users/{q(args.name)}", body)
    say(f"user '{args.name}' added")


def delete_user(api, args) -> None:
    api.call("DELETE", f"/api/users/{q(args.name)}", what=f"user '{args.name}'")
    say(f"user '{args.name}' deleted")


def _update_user(api, name: str, **changes) -> None:
    """A user PUT keeping what is not changed (the API replaces a user whole: without its
    hash, a PUT would clear its password)."""
    user = _user(api, name)
    if user is None:
        raise Refused(404, f"user '{name}' not found")
    body = {"tags": ",".join(user.get("tags") or []),
            "password_hash": user.get("password_hash", ""),
            "hashing_algorithm": user.get("hashing_algorithm",
                                          "rabbit_password_hashing_sha256")}
    if "password" in changes:
        body.pop("password_hash")
        body.pop("hashing_algorithm")
    body.update(changes)
    api.call("PUT", f"/api/users/{q(name)}", body)


def change_password(api, args) -> None:
    password = _password(args)
    if not password:
        raise Usage(f"give the new password on stdin (--password-stdin) or in {NEW_PASSWORD}")
    _update_user(api, args.name, password=password)
    say(f"password of user '{args.name}' changed")


def set_tags(api, args) -> None:
    _update_user(api, args.name, tags=",".join(_tags(args.tags)))
    say(f"tags of user '{args.name}' set")


# ------------------------------------------------------------------ permissions
def list_permissions(api, args, kind: str) -> None:
    """``kind`` ("permissions", "topic-permissions") of one user in every vhost, or of
    --vhost."""
    if args.of_user is not None:
        emit(api.call("GET", f"/api/users/{q(args.of_user)}/{kind}",
                      what=f"user '{args.of_user}'"), args)
    else:
        emit(api.call("GET", f"/api/vhosts/{q(args.vhost)}/{kind}", what=vhost(args)), args)


def set_permissions(api, args) -> None:
    api.call("PUT", f"/api/permissions/{q(args.vhost)}/{q(args.name)}",
             {"configure": args.configure, "write": args.write, "read": args.read})
    say(f"permissions of user '{args.name}' set in vhost '{args.vhost}'")


def clear_permissions(api, args) -> None:
    api.call("DELETE", f"/api/permissions/{q(args.vhost)}/{q(args.name)}",
             what=f"permissions of user '{args.name}' in vhost '{args.vhost}'")
    say(f"permissions of user '{args.name}' cleared in vhost '{args.vhost}'")


def set_topic_permissions(api, args) -> None:
    api.call("PUT", f"/api/topic-permissions/{q(args.vhost)}/{q(args.name)}",
             {"exchange": args.exchange, "write": args.write, "read": args.read})
    say(f"topic permissions of user '{args.name}' on exchange '{args.exchange}' set in vhost "
        f"'{args.vhost}'")


def clear_topic_permissions(api, args) -> None:
    path = f"/api/topic-permissions/{q(args.vhost)}/{q(args.name)}"
    if args.exchange is not None:
        path += f"?exchange={q(args.exchange)}"
    api.call("DELETE", path, what=f"topic permissions of user '{args.name}' in vhost "
                                   f"'{args.vhost}'")
    say(f"topic permissions of user '{args.name}' cleared in vhost '{args.vhost}'")


# ------------------------------------------------------------------ cluster name
def cluster_name(api, args) -> None:
    if args.name is None:
        print(api.call("GET", "/api/cluster-name")["name"])
        return
    api.call("PUT", "/api/cluster-name", {"name": args.name})
    say(f"cluster name set to '{args.name}'")


def register(commands, flags) -> None:
    users = commands.add_parser("users", help="users").add_subparsers(
        dest="command", required=True, metavar="COMMAND")
    p = users.add_parser("list", help="the users and their tags", parents=flags)
    add_output_flags(p, USER_COLUMNS)
    p.set_defaults(run=list_users)
    p = users.add_parser("add", help="add a user (or replace one)", parents=flags)
    p.add_argument("name")
    p.add_argument("--tags", default="", help="comma-separated, e.g. management,policymaker")
    p.add_argument("--password-stdin", action="store_true",
                   help=f"read the password from stdin (else from {NEW_PASSWORD})")
    p.add_argument("--no-password", action="store_true",
                   help="a user that cannot log in with a password (certificates only)")
    p.set_defaults(run=add_user)
    p = users.add_parser("delete", help="delete a user (and its permissions)", parents=flags)
    p.add_argument("name")
    p.set_defaults(run=delete_user)
    p = users.add_parser("password", help="change a user's password", parents=flags)
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true",
                   help=f"read the password from stdin (else from {NEW_PASSWORD})")
    p.set_defaults(run=change_password)
    p = users.add_parser("tags", help="set a user's tags (replacing them)", parents=flags)
    p.add_argument("name")
    p.add_argument("tags", help="comma-separated; '' for none")
    p.set_defaults(run=set_tags)

    for verb, columns, setter, clearer in (
            ("permissions", PERMISSION_COLUMNS, set_permissions, clear_permissions),
            ("topic-permissions", TOPIC_COLUMNS, set_topic_permissions,
             clear_topic_permissions)):
        family = commands.add_parser(verb, help=verb.replace("-", " ")).add_subparsers(
            dest="command", required=True, metavar="COMMAND")
        p = family.add_parser("list", help=f"the {verb.replace('-', ' ')} in --vhost, or "
                                           f"of one user (--of-user) in every vhost",
                              parents=flags)
        p.add_argument("--of-user", metavar="USER")
        add_output_flags(p, columns)
        p.set_defaults(run=functools.partial(list_permissions, kind=verb))
        p = family.add_parser("set", help=f"set a user's {verb.replace('-', ' ')} in --vhost",
                              parents=flags)
        p.add_argument("name", metavar="user")
        if verb == "permissions":
            p.add_argument("configure", help="regular expression over resource names")
        else:
            p.add_argument("exchange", help="the topic exchange")
        p.add_argument("write", help="regular expression")
        p.add_argument("read", help="regular expression")
        p.set_defaults(run=setter)
        p = family.add_parser("clear", help=f"clear a user's {verb.replace('-', ' ')} in "
                                            f"--vhost", parents=flags)
        p.add_argument("name", metavar="user")
        if verb == "topic-permissions":
            p.add_argument("exchange", nargs="?", help="only this exchange's (default: all)")
        p.set_defaults(run=clearer)

    p = commands.add_parser("cluster-name", parents=flags,
                            help="show the cluster name, or set it")
    p.add_argument("name", nargs="?")
    p.set_defaults(run=cluster_name)
