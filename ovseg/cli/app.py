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
    add_grid_arguments(p)
    p.set_defaults(func=run)


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
        settings = method_settings(args, grid_used=True)
        _check_port(args.host, args.port)  # before the models load
        from ovseg.app import build_app

        segmenter = build_segmenter(settings, args.device)
        app = build_app(
            segmenter, models={"sam": str(settings["sam"]), "clip": str(settings["clip"])}
        )
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as e:
        print(f"ovseg app: error: {e}", file=sys.stderr)
        return 2
    print(
        f"ovseg app: serving on http://{args.host}:{args.port} (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        app.launch(server_name=args.host, server_port=args.port, share=args.share)
    except OSError as e:  # the port was taken between the check and the launch
        print(f"ovseg app: error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovseg app: stopped", file=sys.stderr)
        return 130
    return 0
