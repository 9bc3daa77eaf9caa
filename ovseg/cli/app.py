"""``ovseg app``: launch the interactive web app (Gradio) on a host and port."""

from __future__ import annotations

import argparse
import sys

from ovseg.cli._args import (
    add_grid_arguments,
    add_method_arguments,
    add_model_arguments,
    build_segmenter,
    method_settings,
)
from ovseg.constants import APP_MAX_SIDE


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="launch the interactive web app (Gradio)",
        description="Serve the ovseg web app: upload an image, type classes, segment "
        "automatically or with clicks, boxes and scribbles. Models are loaded once "
        "at launch and shared by all visitors; each visitor's image and prompts "
        "stay in their own session.",
    )
    add_model_arguments(p)
    add_method_arguments(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also create a temporary public Gradio link"
    )
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        default=None,
        help="ask for this user name and password before the page (recommended beyond "
        "127.0.0.1; OVSEG_APP_AUTH=USER:PASS does the same without showing it in ps)",
    )
    p.add_argument(
        "--max-file-size",
        default="50mb",
        metavar="SIZE",
        help="largest upload accepted, e.g. 20mb, 1gb, or bytes (default 50mb)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=APP_MAX_SIDE,
        metavar="PX",
        help=f"uploads with a longer side above PX are segmented downsized to it (the page says "
        f"so; label PNGs come back at full size); 0: never (default {APP_MAX_SIDE})",
    )
    add_grid_arguments(p)
    p.set_defaults(func=run)


def _auth(text: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` (from ``--auth`` or ``$OVSEG_APP_AUTH``) as a pair, or None.

    Raises:
        ValueError: not of the form USER:PASS with both parts non-empty.
    """
    import os

    text = text if text is not None else os.environ.get("OVSEG_APP_AUTH") or None
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError("--auth must be USER:PASS with a non-empty user name and password")
    return user, password


def _max_file_size(text: str) -> int:
    """``--max-file-size`` in bytes: an integer, or a number with b, kb, mb, gb (1024-based).

    Raises:
        ValueError: anything else, or not positive.
    """
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*", str(text).lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"--max-file-size must be like 50mb, 1gb or 1000000, got {text!r}")
    scale = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}[match[2] or "b"]
    return int(float(match[1]) * scale)


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _stop_on_sigterm() -> None:
    """Stop on SIGTERM (``kill``, a service manager) as on Ctrl-C: the server closes and the
    process exits normally, removing its temporary folders."""
    import signal
    import threading

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _own_gradio_cache() -> None:
    """Keep Gradio's uploads and cached outputs in a folder of this process (removed at exit,
    or by the next app after a kill: :mod:`ovseg.app.tempfiles`), unless GRADIO_TEMP_DIR is
    set."""
    import os

    if not os.environ.get("GRADIO_TEMP_DIR"):
        from ovseg.app.tempfiles import make_folder

        os.environ["GRADIO_TEMP_DIR"] = str(make_folder("app"))


def _check_port(host: str, port: int) -> None:
    """Raise OSError (with a clear message) if ``host:port`` cannot be listened on now."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"--host {host!r} is not an address of this machine ({e})") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as web servers do
        try:
            sock.bind(address)
        except OSError as e:
            raise OSError(
                f"cannot listen on {host}:{port} ({e.strerror or e}): the port is in use or "
                "not allowed; choose another with --port"
            ) from e


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        print(f"ovseg app: error: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        if args.max_side < 0:
            raise ValueError(
                f"--max-side must be 0 (no limit) or a positive size, got {args.max_side}"
            )
        auth = _auth(args.auth)
        max_file_size = _max_file_size(args.max_file_size)
        settings = method_settings(args, grid_used=True)
        _check_port(args.host, args.port)  # before the models load
        from ovseg.app.tempfiles import clean_stale

        clean_stale()  # what an app killed earlier left
        _own_gradio_cache()
        from ovseg.app import build_app

        segmenter = build_segmenter(settings, args.device)
        names = {"sam": str(settings["sam"]), "clip": str(settings["clip"])}
        app = build_app(
            segmenter, models=names, max_file_size=max_file_size, max_side=args.max_side or None
        )
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as e:
        print(f"ovseg app: error: {e}", file=sys.stderr)
        return 2
    if auth is None and (args.share or not _is_loopback(args.host)):
        where = "a public --share link" if args.share else f"--host {args.host}"
        print(
            f"ovseg app: warning: serving on {where} without --auth: anyone who can reach it "
            "can use the app and its models; add --auth USER:PASS",
            file=sys.stderr,
        )
    print(
        f"ovseg app: serving on http://{args.host}:{args.port} (Ctrl+C to stop; uploads up to "
        f"{max_file_size / (1 << 20):g} MiB)",
        file=sys.stderr,
        flush=True,
    )
    _stop_on_sigterm()
    try:
        app.launch(
            server_name=args.host, server_port=args.port, share=args.share, auth=auth,
            max_file_size=max_file_size,
        )  # fmt: skip
    except OSError as e:  # the port was taken between the check and the launch
        print(f"ovseg app: error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovseg app: stopped", file=sys.stderr)
        return 130
    return 0
