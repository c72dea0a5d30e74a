"""The `vllm` command line: `vllm --version`, `vllm serve <model>`, `vllm collect-env`."""

import argparse
from typing import List, Optional

import vllm
from vllm import envs


def build_parser() -> argparse.ArgumentParser:
    """Create the argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="vllm", description="mini-vllm CLI")
    parser.add_argument("--version", action="version", version=vllm.__version__)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="pretend to serve a model")
    serve.add_argument("model", nargs="?", default=None)
    sub.add_parser("collect-env", help="print environment information")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        print(f"serving {args.model or envs.VLLM_DEFAULT_MODEL}")
        return 0
    if args.command == "collect-env":
        from vllm.collect_env import main as collect_env_main

        collect_env_main()
        return 0
    parser.print_help()
    return 1
