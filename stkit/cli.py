"""Command line of the kit: ``python -m stkit {report,run,stern,stnet} ...``.

    python -m stkit report --size quick --out reports      # all notebooks -> reports/index.html
    python -m stkit run notebooks/03_stern_two_stage_training.ipynb -p RUN_SIZE smoke
    python -m stkit stern train --labels data/cxr_quick/labels.csv --out runs/stern --size quick
    python -m stkit stnet train --data data/buv_quick_seed0 --out runs/stnet --size quick
    python -m stkit stnet eval --data data/buv_quick_seed0 --out runs/stnet --size quick
    torchrun --nproc_per_node 8 -m stkit stern train --labels L.csv --out runs/stern \
        --config stkit/configs/stern_chexpert.yaml --device cuda --precision bf16

Data commands (synthetic sets, converters of the real datasets) belong to the data layer:
``python -m data_prep --help``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path


def _param_value(text: str):
    """A -p value: a Python literal (3, 0.5, True, None, 'x') if it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _params(pairs) -> dict:
    return {name: _param_value(value) for name, value in pairs or []}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    rep = sub.add_parser("report", help="run the numbered notebooks and write an HTML report")
    rep.add_argument("--size", default="quick", choices=("smoke", "quick", "paper"))
    rep.add_argument("--out", default="reports", help="report folder (executed notebooks, index.html, metrics.json)")
    rep.add_argument("--only", nargs="*", help="notebook file names to run (default: all numbered notebooks)")
    rep.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    rep.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")

    run = sub.add_parser("run", help="run one notebook with papermill")
    run.add_argument("notebook")
    run.add_argument("--out", help="executed copy (default: reports/<name>.ipynb)")
    run.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")

    stern = sub.add_parser("stern", help="train and test STERN (two stages) and its baselines")
    stern.add_argument("action", choices=("train",))
    stern.add_argument("--labels", required=True, help="kit-format label CSV")
    stern.add_argument("--out", required=True, help="run folder (checkpoints, results.json); an existing run resumes")
    stern.add_argument("--size", choices=("smoke", "quick", "paper"), help="run size (default quick; paper = stkit/configs/stern_chexpert.yaml)")
    stern.add_argument("--config", help="a recipe file (YAML, see stkit/configs) instead of a run size")
    stern.add_argument("--precision", choices=("fp32", "bf16"), help="every stage's precision (default: the recipe's; bf16 = autocast on GPUs)")
    stern.add_argument("--variants", nargs="+", default=["bounded", "baseline"], choices=("bounded", "faithful", "baseline", "oracle"))
    stern.add_argument("--seed", type=int, default=0)
    stern.add_argument("--device", default="cpu", help="cpu, cuda (this process's GPU under torchrun) or auto")
    stnet = sub.add_parser("stnet", help="train or evaluate STNet and its single-frame baseline on BUV-format videos")
    stnet.add_argument("action", choices=("train", "eval"))
    stnet.add_argument("--data", required=True, help="BUV-format folder (rawframes/ and the split JSONs)")
    stnet.add_argument("--out", required=True, help="run folder (<variant>/ checkpoints, results.json); an existing run resumes")
    stnet.add_argument("--size", choices=("smoke", "quick", "paper"), help="run size (default quick; paper = stkit/configs/stnet_buv.yaml)")
    stnet.add_argument("--config", help="an STNet recipe file (YAML, see stkit/configs) instead of a run size")
    stnet.add_argument("--precision", choices=("fp32", "bf16"), help="training precision (bf16 = autocast on GPUs)")
    stnet.add_argument("--variants", nargs="+", default=["stnet", "baseline"], choices=("stnet", "baseline", "faithful"))
    stnet.add_argument("--batch-size", type=int, help="GLOBAL clips per step, shared by torchrun's processes (default: the recipe's)")
    stnet.add_argument("--seed", type=int, default=0)
    stnet.add_argument("--device", default="cpu", help="cpu, cuda (this process's GPU under torchrun) or auto")
    return ap


def _stnet(args) -> None:
    """``stnet train`` (one process or each of torchrun's; DDP) and ``stnet eval`` (one process)."""
    from . import distributed
    from .stnet.experiment import evaluate_run, run_stnet

    if args.config and args.size:
        raise ValueError("give either --size or --config, not both")
    size = args.config or args.size or "quick"
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    if args.action == "eval":
        results = evaluate_run(args.data, args.out, size, tuple(args.variants), distributed.setup(args.device).device,
                               **overrides)
        print(json.dumps(results, indent=1, default=float))
        return
    world = distributed.setup(args.device)
    try:
        results = run_stnet(args.data, args.out, size, tuple(args.variants), args.seed, world.device,
                            progress=world.main, world=world, precision=args.precision, **overrides)
        if world.main:
            print(json.dumps({v: {k: x for k, x in m.items() if k != "history"} for v, m in results.items()},
                             indent=1, default=float))
    finally:
        distributed.teardown()


def _stern_train(args) -> None:
    """``stern train`` in one process, or in each of torchrun's processes (DDP; gloo on CPU, nccl on GPUs)."""
    from . import distributed
    from .configs import recipe_path
    from .experiment import run_stern

    if args.config and args.size:
        raise ValueError("give either --size or --config, not both")
    size = str(recipe_path(args.config)) if args.config else args.size or "quick"
    world = distributed.setup(args.device)
    try:
        results = run_stern(args.labels, args.out, size, tuple(args.variants), args.seed, world.device,
                            progress=world.main, world=world, precision=args.precision)
        if world.main:
            print(json.dumps(results, indent=1))
    finally:
        distributed.teardown()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .runner import NotebookError, run_all, run_notebook

    try:
        if args.command == "report":
            only = None
            if args.only:
                from .runner import NOTEBOOK_DIR

                only = [NOTEBOOK_DIR / name for name in args.only]
            metrics = run_all(args.size, args.out, only, _params(args.p), log_output=args.log_output)
            print(json.dumps({k: v for k, v in metrics.items() if k != "report"}, indent=1, default=float))
            print(f"report: {Path(args.out).resolve() / 'index.html'}")
        elif args.command == "run":
            out = args.out or Path("reports") / Path(args.notebook).name
            print(run_notebook(args.notebook, out, _params(args.p)))
        elif args.command == "stern":
            _stern_train(args)
        elif args.command == "stnet":
            _stnet(args)
    except (NotebookError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
