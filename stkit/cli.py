r"""The kit's one command line: ``python -m stkit {report,run,screenshots,stern,stnet,ops,bench} ...``.

    python -m stkit report --size quick --out reports      # all notebooks -> reports/index.html
    python -m stkit run notebooks/03_stern_two_stage_training.ipynb -p RUN_SIZE smoke
    python -m stkit stern train --labels data/cxr_quick_seed0/labels.csv --out runs/stern --size quick
    python -m stkit stern seeds --labels data/cxr_quick_seed0/labels.csv --out runs/seeds --seeds 0 1 2
    python -m stkit stnet train --data data/buv_quick_seed0 --out runs/stnet --size quick
    python -m stkit stnet eval --data data/buv_quick_seed0 --out runs/stnet --size quick
    python -m stkit stnet eval --data data/buv --out runs/official --size paper --official-weights W.pth
    python -m stkit ops build                               # compile the deformable-attention op now
    python -m stkit bench ops --shapes A,B --threads 2      # the op against its reference
    python -m stkit bench stnet --size quick                # an STNet training step, both ops
    python -m stkit screenshots reports                     # PNGs of a report (headless Chromium)
    torchrun --nproc_per_node 8 -m stkit stern train --labels L.csv --out runs/stern \
        --config stkit/recipes/stern_paper.yaml --device cuda --precision bf16

Data commands (synthetic sets, converters of the real datasets) belong to the data layer:
``python -m data_prep --help``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import torch

from .engine import distributed
from .engine.recipe import SIZES, RecipeError
from .ops import bench as ops_bench
from .ops import build, dispatch
from .report.runner import NOTEBOOK_DIR, NotebookError, run_all, run_notebook
from .report.screenshots import screenshot_report
from .stern import config as stern_config
from .stern import experiment as stern
from .stnet import bench as stnet_bench
from .stnet import config as stnet_config
from .stnet import experiment as stnet
from .stnet import official as stnet_official


def _param_value(text: str):
    """A -p value: a Python literal (3, 0.5, True, None, 'x') if it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _params(pairs) -> dict:
    return {name: _param_value(value) for name, value in pairs or []}


def _add_notebook_commands(sub) -> None:
    rep = sub.add_parser("report", help="run the numbered notebooks and write an HTML report")
    rep.add_argument("--size", default="quick", choices=SIZES)
    rep.add_argument("--out", default="reports", help="report folder (executed notebooks, index.html, metrics.json)")
    rep.add_argument("--only", nargs="*", help="notebook file names to run (default: all numbered notebooks)")
    rep.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    rep.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    run = sub.add_parser("run", help="run one notebook with papermill")
    run.add_argument("notebook")
    run.add_argument("--out", help="executed copy (default: reports/<name>.ipynb)")
    run.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), help="notebook parameter")
    shots = sub.add_parser("screenshots", help="full-page PNGs of a report's pages (headless Chromium, network off)")
    shots.add_argument("report", help="report folder holding index.html and the notebook pages")
    shots.add_argument("--out", help="folder for the PNGs (default: REPORT/screenshots)")
    shots.add_argument("--height", type=int, default=4000, help="page height in pixels (long notebooks need more)")


def _add_run_options(p, kind: str, variants: tuple, default_variants: list) -> None:
    """The options both papers' training commands share."""
    p.add_argument("--out", required=True, help="run folder (<variant>/ checkpoints, results.json); an existing run resumes")
    p.add_argument("--size", choices=SIZES, help=f"run size (default quick: stkit/recipes/{kind}_<size>.yaml)")
    p.add_argument("--config", help=f"a {kind} recipe file (YAML, see stkit/recipes) instead of a run size")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="every stage's precision (default: the recipe's; bf16 = autocast on GPUs)")
    p.add_argument("--batch-size", type=int, help="GLOBAL batch per step, shared by torchrun's processes (default: the recipe's)")
    p.add_argument("--variants", nargs="+", default=default_variants, choices=variants)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda (this process's GPU under torchrun) or auto")


def _add_paper_commands(sub) -> None:
    st = sub.add_parser("stern", help="train and test STERN (two stages) and its baselines")
    st.add_argument("action", choices=("train", "seeds"), help="train: the variants once; seeds: STERN, baseline "
                    "and oracle crop once per training seed, as a table")
    st.add_argument("--labels", required=True, help="kit-format label CSV")
    _add_run_options(st, "stern", stern_config.VARIANTS, ["bounded", "baseline"])
    st.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds: the training seeds")
    sn = sub.add_parser("stnet", help="train or evaluate STNet and its single-frame baseline on BUV-format videos")
    sn.add_argument("action", choices=("train", "eval"))
    sn.add_argument("--data", required=True, help="BUV-format folder (rawframes/ and the split JSONs)")
    _add_run_options(sn, "stnet", stnet_config.VARIANTS, ["stnet", "baseline"])
    sn.add_argument("--official-weights", metavar="FILE", help="eval: the released clip model's weights in the "
                    "faithful model of --size/--config (the published ones: --size paper) -> OUT/official_eval.json")


def _add_tool_commands(sub) -> None:
    ops = sub.add_parser("ops", help="the compiled deformable-attention op: build it now, or say what a build would do")
    ops.add_argument("action", choices=("build", "info"))
    ops.add_argument("-v", "--verbose", action="store_true", help="show compiler commands")
    bench = sub.add_parser("bench", help="timing scripts: the op against its reference, an STNet training step")
    what = bench.add_subparsers(dest="what", required=True)
    ops_bench.add_arguments(what.add_parser("ops", help="the op against its reference, with a roofline"), _op_shapes())
    sb = what.add_parser("stnet", help="one STNet training step (compiled op vs reference) and both inference modes")
    sb.add_argument("--size", default="quick", choices=SIZES)
    sb.add_argument("--steps", type=int, default=3)
    sb.add_argument("--height", type=int, default=128)
    sb.add_argument("--width", type=int, default=160)
    sb.add_argument("--device", default="cpu")
    sb.add_argument("--amp", choices=["bf16"], default=None)
    sb.add_argument("--baseline", action="store_true")
    sb.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


def _op_shapes() -> dict:
    """The op benchmark's generic shapes and the calls of the STNet recipes."""
    return {**ops_bench.SHAPES, **stnet_bench.op_shapes()}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_notebook_commands(sub)
    _add_paper_commands(sub)
    _add_tool_commands(sub)
    return ap


def _recipe_arg(args):
    if args.config and args.size:
        raise ValueError("give either --size or --config, not both")
    return args.config or args.size or "quick"


def _train(args, experiment, data: str) -> None:
    """``<paper> train`` in one process, or in each of torchrun's processes (DDP; gloo on CPU, nccl on GPUs)."""
    world = distributed.setup(args.device)
    try:
        results = experiment.run(data, args.out, _recipe_arg(args), tuple(args.variants), args.seed, world.device,
                                 progress=world.main, world=world, precision=args.precision, batch_size=args.batch_size)
        if world.main:
            print(json.dumps({v: {k: x for k, x in m.items() if k != "history"} for v, m in results.items()},
                             indent=1, default=float))
    finally:
        distributed.teardown()


def _stern(args) -> None:
    if args.action == "train":
        _train(args, stern, args.labels)
        return
    rows = stern.seeds_table(args.labels, args.out, _recipe_arg(args), args.seeds, args.device)
    print(stern.seeds_summary(rows))


def _stnet(args) -> None:
    if args.official_weights and args.action != "eval":
        raise ValueError("--official-weights goes with 'stnet eval'")
    if args.action == "train":
        _train(args, stnet, args.data)
        return
    if args.official_weights:
        metrics = stnet_official.evaluate_official(args.data, args.official_weights, _recipe_arg(args), args.out,
                                                   distributed.setup(args.device).device)
        print(json.dumps(metrics, indent=1, default=float))
        return
    results = stnet.evaluate_run(args.data, args.out, _recipe_arg(args), tuple(args.variants),
                                 distributed.setup(args.device).device)
    print(json.dumps(results, indent=1, default=float))


def _ops(args) -> int:
    """``ops info``: what a build would include; ``ops build``: build now (non-zero exit if it fails)."""
    if args.action == "info":
        plan = build.plan()
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
        print(f"sources:  {', '.join(p.name for p in plan.sources)}")
        print(f"CUDA:     {'yes' if plan.with_cuda else 'no'} ({plan.cuda_reason})")
        print(f"cache:    {plan.directory}")
        return 0
    if dispatch.mode() == "reference":
        print(f"{dispatch.ENV_VAR}=reference is set: nothing to build")
        return 0
    try:
        plan = build.load_extension(verbose=args.verbose)
    except build.BuildError as exc:
        print(f"stkit ops build failed: {exc}", file=sys.stderr)
        return 1
    print(f"built:    {plan.directory}")
    print(f"kernel:   {torch.ops.stkit_ext.cpu_info()}")
    print(f"CUDA:     {'yes' if plan.with_cuda else 'no'} ({plan.cuda_reason})")
    print(f"backend:  {dispatch.backend()}")
    return 0


def _bench(args) -> int:
    if args.what == "ops":
        return ops_bench.run_from_args(args, _op_shapes())
    stnet_bench.run_bench(args.size, args.steps, args.height, args.width, args.device, args.amp, args.baseline,
                          args.threads)
    return 0


def _report(args) -> None:
    only = [NOTEBOOK_DIR / name for name in args.only] if args.only else None
    metrics = run_all(args.size, args.out, only, _params(args.p), log_output=args.log_output)
    print(json.dumps({k: v for k, v in metrics.items() if k != "report"}, indent=1, default=float))
    print(f"report: {Path(args.out) / 'index.html'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            _report(args)
        elif args.command == "run":
            print(run_notebook(args.notebook, args.out or Path("reports") / Path(args.notebook).name, _params(args.p)))
        elif args.command == "screenshots":
            for png in screenshot_report(args.report, args.out, args.height):
                print(png)
        elif args.command == "stern":
            _stern(args)
        elif args.command == "stnet":
            _stnet(args)
        elif args.command == "ops":
            return _ops(args)
        elif args.command == "bench":
            return _bench(args)
    except (NotebookError, FileNotFoundError, FileExistsError, ValueError, RecipeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
