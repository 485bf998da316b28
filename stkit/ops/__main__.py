"""Command line: ``python -m stkit.ops build|info``.

build   compile (or reuse from the cache) the extension now and print the backend;
        exits non-zero if the build fails (the library falls back at run time, but an
        explicit build request should say so loudly).
info    print the backend, the cache folder and what a build would include, without
        building.
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stkit.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "info"])
    parser.add_argument("-v", "--verbose", action="store_true", help="show compiler commands")
    args = parser.parse_args(argv)

    from . import dispatch as dispatch
    from . import build

    if args.command == "info":
        plan = build.plan()
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
        print(f"sources:  {', '.join(p.name for p in plan.sources)}")
        print(f"CUDA:     {'yes' if plan.with_cuda else 'no'} ({plan.cuda_reason})")
        print(f"cache:    {plan.directory}")
        return 0

    if dispatch._mode() == "reference":
        print(f"{dispatch.ENV_VAR}=reference is set: nothing to build")
        return 0
    try:
        plan = build.load_extension(verbose=args.verbose)
    except build.BuildError as exc:
        print(f"stkit.ops build failed: {exc}", file=sys.stderr)
        return 1
    print(f"built:    {plan.directory}")
    print(f"kernel:   {torch.ops.stkit_ext.cpu_info()}")
    print(f"CUDA:     {'yes' if plan.with_cuda else 'no'} ({plan.cuda_reason})")
    print(f"backend:  {dispatch.backend()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
