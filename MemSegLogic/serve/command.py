"""The command line of the server: ``memseg serve``, and ``--server URL`` for ``segment``/``echo``."""

from __future__ import annotations

import os
import sys

from .tokens import LOOPBACK_HOSTS, default_token_path, load_or_create_token

TOKEN_VARIABLE = "MEMSEG_TOKEN"  # the client's token, kept out of the shell history and `ps`


def add_serve_parser(subparsers) -> None:
    """`memseg serve`: the remote inference server."""
    serve = subparsers.add_parser("serve", help="serve segmentation over HTTP for MemSeg clients (Slicer, memseg --server)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this computer only); any other needs the token")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1: one GPU)")
    serve.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    serve.add_argument("--require-token", action="store_true", help="ask for the token on 127.0.0.1 too")
    serve.add_argument("--token-file", default=None,
                       help=f"the bearer token's file, made (0600) on first start (default {default_token_path()})")
    serve.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted (default 1024 MB)")
    serve.add_argument("--job-time-limit", type=float, default=3600, help="seconds a job may run (default 3600)")
    serve.add_argument("--result-ttl", type=float, default=600,
                       help="seconds a finished job's result is kept (default 600)")
    serve.set_defaults(run=serve_command)


def serve_command(args) -> int:
    from .app import create_app, run_server

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    token = None
    if args.host not in LOOPBACK_HOSTS or args.require_token:
        token, created = load_or_create_token(args.token_file)
        where = args.token_file or default_token_path()
        if created:
            print(f"memseg serve: new token (saved in {where}, readable by you only; shown this once):\n{token}",
                  file=sys.stderr)
        else:
            print(f"memseg serve: clients need the token in {where}", file=sys.stderr)
    app = create_app(token=token, workers=args.workers, device=args.device, max_upload_mb=args.max_upload_mb,
                     job_time_limit=args.job_time_limit, result_ttl=args.result_ttl)
    print(f"memseg serve: http://{args.host}:{args.port} on {app.state.device}, {args.workers} worker(s); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    run_server(app, args.host, args.port)
    return 0


def add_remote_arguments(parser) -> None:
    """``--server URL`` (and its token) for a segmentation command."""
    parser.add_argument("--server", metavar="URL", help="run on a MemSeg server (memseg serve) instead of here")
    parser.add_argument("--token", default=None, help=f"the server's token (default ${TOKEN_VARIABLE})")


def local_or_remote(args, local):
    """``local`` (segment_volume or segment_sequence), or the same call on ``args.server``."""
    if not getattr(args, "server", None):
        return local
    from .client import RUN_ON_SERVER, segmenter

    return getattr(segmenter(RUN_ON_SERVER, args.server, args.token or os.environ.get(TOKEN_VARIABLE)), local.__name__)
