"""``posefleet pki``: the fleet's certificate authority (``init``), certificates (``issue``), dashboard tokens
(``token``, signed by a ``token-signer`` key the CA certifies) and their revocation (``revoke``).

Only argparse here: the parser builds on a camera machine; the work is in ``posefleet.common.certs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from posefleet.common.tls import ROLES, TOKEN_ROLES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pki", help="the fleet's certificate authority: init, issue, token, revoke")
    psub = p.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    i = psub.add_parser("init", help="create a fleet CA in DIR (ca.crt, ca.key)")
    i.add_argument("--dir", type=Path, required=True)
    i.add_argument("--days", type=int, default=3650)
    i.set_defaults(func=cmd_init)
    s = psub.add_parser("issue", help="issue DIR/NAME.crt and DIR/NAME.key for one holder")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--role", required=True, choices=ROLES)
    s.add_argument("--name", required=True, help="node id for nodes; any DNS label otherwise")
    s.add_argument(
        "--cameras", default="", metavar="ID,...", help="camera ids a camera may stream or a subscriber read"
    )
    s.add_argument("--host", action="append", default=[], help="a DNS name or IP clients dial it by (repeatable)")
    s.add_argument("--days", type=int, default=365)
    s.set_defaults(func=cmd_issue)
    g = psub.add_parser(
        "token-signer",
        help="a key of its own that signs dashboard tokens, certified by the fleet CA (DIR/token-signer.crt, .key): "
        "copy those two where tokens are minted, never ca.key",
    )
    g.add_argument("--dir", type=Path, required=True)
    g.add_argument("--days", type=int, default=365)
    g.set_defaults(func=cmd_token_signer)
    t = psub.add_parser(
        "token", help="a dashboard login token (admin or subscriber), signed by DIR's token signer (made if missing)"
    )
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--role", required=True, choices=TOKEN_ROLES)
    t.add_argument("--name", required=True)
    t.add_argument("--cameras", default="", metavar="ID,...", help="the cameras a subscriber may see")
    t.add_argument("--days", type=int, default=30, help="1 to 90 (coordinators refuse longer-lived tokens)")
    t.set_defaults(func=cmd_token)
    r = psub.add_parser(
        "revoke", help="revoke a certificate (NAME, a .crt file or SERIAL) or a token (its id): DIR/ca.crl"
    )
    r.add_argument("--dir", type=Path, required=True)
    r.add_argument(
        "what",
        metavar="NAME|FILE|SERIAL|TOKEN-ID",
        help="a name issued in DIR, a .crt file, a serial or a token id (hex)",
    )
    r.set_defaults(func=cmd_revoke)


def cmd_init(args: argparse.Namespace) -> int:
    from posefleet.common.certs import init_ca

    print(init_ca(args.dir, days=args.days))
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    from posefleet.common.certs import issue

    cameras = [c for c in args.cameras.split(",") if c]
    crt, key = issue(args.dir, role=args.role, name=args.name, cameras=cameras, hosts=args.host, days=args.days)
    print(crt)
    print(key)
    return 0


def cmd_token_signer(args: argparse.Namespace) -> int:
    from posefleet.common.certs import issue_token_signer

    print(issue_token_signer(args.dir, days=args.days))
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from posefleet.common.certs import issue_token, token_id

    cameras = [c for c in args.cameras.split(",") if c]
    token = issue_token(args.dir, role=args.role, name=args.name, cameras=cameras, days=args.days)
    print(token)
    print(f"token id {token_id(token)} (`posefleet pki revoke --dir {args.dir} {token_id(token)}` revokes it)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from posefleet.common.certs import revoke

    serial, crl = revoke(args.dir, args.what)
    print(f"revoked {serial:x} in {crl}: copy it beside ca.crt on every node and coordinator (read on change)")
    return 0
