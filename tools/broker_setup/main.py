"""`alc broker init|add|check`: set up a locked-down mosquitto (PROTOCOL.md s9).

    alc broker init DIR --host NAME [--also NAME ...] [--port 8883] [--bind ADDRESS] [--user U]
    alc broker add DIR --site S --controller C [--root alc] [--bench]
    alc broker add DIR --site S --hub NAME [--root alc] [--bench]
    alc broker add DIR --site S --homeassistant-publisher C [--root alc] [--prefix homeassistant]
    alc broker add DIR --site S --homeassistant NAME [--root alc] [--prefix homeassistant]
    alc broker passwd DIR --account USER
    alc broker check DIR
    alc broker cert DIR --host NAME [--also NAME ...] --out OUTDIR

Bad input changes nothing: every argument is checked, and every file's content
made, before the first file is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from firmware.core.errors import LocalError
from tools.broker_setup import acl, certs, conf, passwd
from tools.broker_setup.check import check
from tools.broker_setup.layout import PRIVATE, PUBLIC, Layout, LayoutError, make_dir, write_file

PASSWORD_BYTES = 32  # 43 URL-safe characters: no `:` or line end


def parser() -> argparse.ArgumentParser:
    """The `alc broker` argument parser."""
    p = argparse.ArgumentParser(prog="alc broker", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="a new broker directory: config, CA, certificate")
    init.add_argument("dir", type=Path, help="the broker directory (e.g. /var/lib/alc-broker)")
    init.add_argument("--host", required=True, help="the name clients connect to")
    init.add_argument(
        "--also", action="append", default=[], help="another name or IP address (repeatable)"
    )
    init.add_argument("--port", type=int, default=conf.DEFAULT_PORT, help="TLS port (8883)")
    init.add_argument("--bind", help="listen on this address only (default: every address)")
    init.add_argument("--user", help="the user mosquitto switches to when started as root")
    add = sub.add_parser("add", help="a new account: its password and its ACL lines")
    add.add_argument("dir", type=Path, help="the broker directory")
    add.add_argument("--site", required=True, help="site id (topic segment)")
    add.add_argument("--root", default="alc", help="topic root (default alc)")
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--controller", help="a controller of the site: its own topics")
    who.add_argument("--hub", metavar="NAME", help="a hub-side account: every controller's")
    who.add_argument(
        "--homeassistant-publisher",
        metavar="C",
        help="controller C's Home Assistant adapter ([homeassistant] username)",
    )
    who.add_argument(
        "--homeassistant",
        metavar="NAME",
        help="Home Assistant: reads the site's discovery and states, writes only commands",
    )
    add.add_argument(
        "--prefix",
        default=acl.DEFAULT_PREFIX,
        help="Home Assistant's discovery prefix (default homeassistant)",
    )
    add.add_argument(
        "--bench",
        action="store_true",
        help="also the simulator's bench topics (never in production)",
    )
    pw = sub.add_parser(
        "passwd", help="a new password for an account (a lost SD card, a technician who left)"
    )
    pw.add_argument("dir", type=Path, help="the broker directory")
    pw.add_argument("--account", required=True, help="the account, e.g. demo.ctl1")
    chk = sub.add_parser("check", help="what the config allows, account by account")
    chk.add_argument("dir", type=Path, help="the broker directory")
    cert = sub.add_parser("cert", help="a certificate from the broker's CA for another server")
    cert.add_argument("dir", type=Path, help="the broker directory (its CA)")
    cert.add_argument("--host", required=True, help="the name clients connect to")
    cert.add_argument("--also", action="append", default=[], help="another name (repeatable)")
    cert.add_argument("--out", type=Path, required=True, help="where NAME.crt and NAME.key go")
    return p


def main(argv: Sequence[str]) -> int:
    """`alc broker`."""
    args = parser().parse_args(list(argv))
    try:
        layout = Layout.at(args.dir)
        if args.command == "init":
            init(layout, [args.host, *args.also], conf.Options(args.port, args.bind, args.user))
            return 0
        if args.command == "add":
            kind, name = next(
                (kind, value)
                for kind, value in (
                    ("hub", args.hub),
                    ("homeassistant-publisher", args.homeassistant_publisher),
                    ("homeassistant", args.homeassistant),
                    ("controller", args.controller),
                )
                if value is not None
            )
            add(
                layout,
                kind,
                root=args.root,
                site=args.site,
                name=name,
                bench=args.bench,
                prefix=args.prefix,
            )
            return 0
        if args.command == "passwd":
            renew(layout, args.account)
            return 0
        if args.command == "cert":
            issue(layout, [args.host, *args.also], args.out)
            return 0
        layout.require_made()
        report = check(layout, dt.datetime.now(dt.UTC))
        sys.stdout.write(report.text())
        return 1 if report.problems else 0
    except LocalError as exc:
        print(f"alc broker {args.command}: {exc}", file=sys.stderr)
        return 2


def init(layout: Layout, names: list[str], options: conf.Options) -> None:
    """Make a new broker directory; `LocalError` (and nothing written) if it
    already is one or an argument is wrong."""
    options = options.checked()
    for name in names:
        certs.check_name(name)
    taken = [p.name for p in layout.made_files() if p.exists()]
    if taken:
        raise LayoutError(
            f"{layout.dir} already holds {', '.join(taken)}: a new CA would lock every "
            "client out. Use another directory, or `alc broker add` to add accounts"
        )
    now = dt.datetime.now(dt.UTC)
    ca = certs.make_ca(names[0], now)
    server = certs.issue_server(ca, names, now)
    text = conf.render(layout, options)
    make_dir(layout.dir, 0o700)
    make_dir(layout.accounts, 0o700)
    d = layout.dir
    write_file(layout.ca_key, ca.key_pem, PRIVATE)  # stays with whoever ran init
    write_file(layout.ca_cert, ca.cert_pem, PUBLIC, owner_of=d)
    write_file(layout.server_key, server.key_pem, PRIVATE, owner_of=d)
    write_file(layout.server_cert, server.cert_pem, PUBLIC, owner_of=d)
    write_file(layout.passwd, b"", PRIVATE, owner_of=d)
    write_file(layout.acl, acl.header().encode(), PRIVATE, owner_of=d)
    write_file(layout.conf, text.encode(), PUBLIC, owner_of=d)
    print(f"broker directory {d}: TLS on port {options.port} for {', '.join(names)}")
    print(f"  run mosquitto with: mosquitto -c {layout.conf}")
    print(f"  clients trust {layout.ca_cert} (copy it to each controller as [mqtt] ca_file)")
    print(f"  next: alc broker add {d} --site SITE --hub hub, then --controller ID for each")


def add(
    layout: Layout,
    kind: str,
    *,
    root: str,
    site: str,
    name: str,
    bench: bool = False,
    prefix: str = acl.DEFAULT_PREFIX,
) -> None:
    """Add an account of `kind` (a key of `acl.KINDS`) called `name` for `site`:
    its password file in DIR/accounts, its line in the password file, its block
    in the ACL file. `LocalError` (and nothing written) if it exists already."""
    layout.require_made()
    acl.check_segment(root, "--root")
    acl.check_segment(site, "--site")
    acl.check_segment(name, f"--{kind}")
    acl.check_segment(prefix, "--prefix")
    account = acl.KINDS[kind](root, site, name, bench=bench, prefix=prefix)
    user = account.username
    passwd_text = _read(layout.passwd)
    acl_text = _read(layout.acl)
    grants, _everyone = acl.parse(acl_text, where=str(layout.acl))
    if user in passwd.usernames(passwd_text, where=str(layout.passwd)) or user in grants:
        raise LayoutError(f"account {user!r} exists already in {layout.dir}")
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    line = passwd.hashed_line(user, password)
    new_passwd = passwd_text + ("" if passwd_text.endswith("\n") or not passwd_text else "\n")
    new_acl = acl_text + ("" if acl_text.endswith("\n") else "\n") + "\n" + account.block()
    make_dir(layout.accounts, 0o700)
    secret = layout.account_password(user)
    write_file(secret, f"{password}\n".encode(), PRIVATE)
    write_file(layout.passwd, f"{new_passwd}{line}\n".encode(), PRIVATE, owner_of=layout.dir)
    write_file(layout.acl, new_acl.encode(), PRIVATE, owner_of=layout.dir)
    print(f"account {user} ({account.label}); its password is in {secret}")
    _print_use(layout, kind, user, secret)
    print("a running mosquitto reads it after a reload: sudo systemctl reload alc-broker")


def renew(layout: Layout, user: str) -> None:
    """A new random password for the existing account `user`: its line in the
    password file and its file in DIR/accounts replaced, its ACL untouched.
    The old password works until mosquitto reloads. `LocalError` (and nothing
    written) for an account that is not there."""
    layout.require_made()
    passwd_text = _read(layout.passwd)
    if user not in passwd.usernames(passwd_text, where=str(layout.passwd)):
        raise LayoutError(f"no account {user!r} in {layout.passwd}")
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    new_line = passwd.hashed_line(user, password)
    lines = [
        new_line if raw.strip().partition(":")[0] == user else raw
        for raw in passwd_text.splitlines()
    ]
    secret = layout.account_password(user)
    # The new password goes beside the old one first: whichever write fails, the
    # password file and the account's file never disagree.
    staged = secret.with_name(f"{secret.name}.new")
    make_dir(layout.accounts, 0o700)
    write_file(staged, f"{password}\n".encode(), PRIVATE)
    try:
        write_file(layout.passwd, ("\n".join(lines) + "\n").encode(), PRIVATE, owner_of=layout.dir)
    except LocalError:
        staged.unlink(missing_ok=True)  # nothing changed
        raise
    try:
        os.replace(staged, secret)
    except OSError as exc:
        raise LayoutError(
            f"the new password is in {staged}, not yet in {secret}: "
            f"move it there by hand ({exc.strerror or exc})"
        ) from None
    print(f"account {user}: a new password is in {secret}")
    print("copy it to the program that logs in with it (for a controller: its [mqtt]")
    print("password_file, owner alc, chmod 600), then make mosquitto read it: the old one")
    print("works until then: sudo systemctl reload alc-broker")


def issue(layout: Layout, names: list[str], out: Path) -> None:
    """A server certificate for `names` signed by the broker's CA, for another
    server clients reach on the LAN (the kiosk's HTTPS): `out/NAME.crt` and
    `out/NAME.key` (0600). `LocalError` (and nothing written) if either exists."""
    layout.require_made()
    for name in names:
        certs.check_name(name)
    cert_path, key_path = out / f"{names[0]}.crt", out / f"{names[0]}.key"
    taken = [str(p) for p in (cert_path, key_path) if p.exists()]
    if taken:
        raise LayoutError(f"{' and '.join(taken)} exist already: nothing written")
    try:
        ca = certs.Issued(layout.ca_key.read_bytes(), layout.ca_cert.read_bytes())
    except OSError as exc:
        raise LayoutError(f"cannot read the CA: {exc.strerror or exc} (run as its owner)") from None
    server = certs.issue_server(ca, names, dt.datetime.now(dt.UTC))
    make_dir(out, 0o755)
    write_file(key_path, server.key_pem, PRIVATE)
    write_file(cert_path, server.cert_pem, PUBLIC)
    print(f"wrote {cert_path} and {key_path} (chmod 600) for {', '.join(names)}")
    print(f"clients that trust {layout.ca_cert} trust it")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}") from None


def _print_use(layout: Layout, kind: str, user: str, secret: Path) -> None:
    """How the controller or hub uses the new account."""
    settings = conf.parse(_read(layout.conf), where=str(layout.conf))
    port = settings.listeners[0].port if settings.listeners else str(conf.DEFAULT_PORT)
    host = certs.summary(layout.server_cert.read_bytes(), where=str(layout.server_cert)).names[0]
    if kind == "homeassistant-publisher":
        print("copy the password file and ca.crt to the controller (owner alc, chmod 600), then:")
        print("  [homeassistant]")
        print(f'  username = "{user}"')
        print('  password_file = "/etc/alc/homeassistant.password"')
    elif kind == "homeassistant":
        print(f"in Home Assistant's MQTT integration: broker {host}, port {port}, TLS with")
        print(f"  {layout.ca_cert} as the CA, username {user}, the password in {secret}")
    elif kind == "controller":
        print("copy the password file and ca.crt to the controller (owner alc, chmod 600), then:")
        print("  [mqtt]")
        print(f'  host = "{host}"')
        print(f"  port = {port}")
        print("  tls = true")
        print('  ca_file = "/etc/alc/ca.crt"')
        print(f'  username = "{user}"')
        print('  password_file = "/etc/alc/mqtt.password"')
    else:
        print("run the hub (or alc ctl) with:")
        print(
            f"  --host {host} --port {port} --tls --ca-file {layout.ca_cert} "
            f"--username {user} --password-file {secret}"
        )
