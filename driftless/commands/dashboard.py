"""``driftless dashboard``: open the reconciler's dashboard in the browser, signed in.

The link carries the credential in its fragment (``http://127.0.0.1:8080/#token=...``): the browser
keeps the fragment to itself, the page stores the token and removes it from the address bar. Without
a browser (a server, SSH), the link is printed to open elsewhere.
"""

from __future__ import annotations

import argparse
import webbrowser

from driftless.client import default_token
from driftless.commands.status import add_control_argument
from driftless.endpoints import default_control_url, sign_in_link


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--print", dest="print_only", action="store_true",
                   help="print the sign-in link instead of opening a browser")
    add_control_argument(p)


def run(args: argparse.Namespace) -> int:
    url = (args.control or default_control_url()).split(",")[0].rstrip("/")
    token = default_token(args.token_file)
    link = sign_in_link(url, token) if token else f"{url}/"
    if not args.print_only and _open(link):
        print(f"opened the dashboard {url}/ in your browser" + ("" if token else " (no credential found: sign in there)"))
        return 0
    if token:
        print("Open this link to sign in to the dashboard (it holds your credential: do not share it):")
    else:
        print("No credential found (driftless up writes ~/.driftless/admin-token); the dashboard asks for one:")
    print(f"  {link}")
    return 0


def _open(link: str) -> bool:
    """Open ``link`` in a browser; False when there is none (webbrowser finds no GUI or text browser)."""
    try:
        return webbrowser.open(link, new=2)
    except webbrowser.Error:
        return False
