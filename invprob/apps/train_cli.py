"""``invprob train rwpo --config FILE``: the training sub-command, wired into :mod:`invprob.apps.cli`.

:mod:`invprob.apps.cli` registers it with :func:`add_train_parser` and runs it with :func:`run_train`. It can
also run on its own: ``python -m invprob.apps.train_cli rwpo --config FILE --out DIR``. The training itself is
:func:`invprob.solvers.learned.training.train_from_config`; this module only parses, checks and reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from invprob.apps.common import DEVICE_HELP, Formatter, Parser, check_writable_parent, cli_device, seed_type
from invprob.apps.errors import EXIT_USAGE, CLIError

__all__ = ["add_train_parser", "main", "run_train"]

PROG = "invprob train rwpo"
_EXAMPLE = """example:
  invprob train rwpo --config examples/configs/rwpo_sparse2d.json --out runs/sparse2d
  invprob train rwpo --config examples/configs/rwpo_sparse2d.json --out runs/sparse2d --resume
"""


def _add_rwpo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="JSON training config (see examples/configs/rwpo_*.json)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, model/, history.json, config.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (identical continuation)")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in OUT")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=seed_type(), default=None, help="override the config's training seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` (with the ``rwpo`` sub-command) on an ``argparse`` sub-parsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``train`` parser.
    """
    train = subparsers.add_parser(
        "train", help="train a learned solver", description="Train a learned solver.", epilog=_EXAMPLE,
        formatter_class=Formatter,
    )
    sub = train.add_subparsers(dest="train_command", required=True)
    rwpo = sub.add_parser(
        "rwpo", help="train the sparse RWPO transformer from a JSON config",
        description="Train the sparse RWPO transformer (generative sampling or amortised reconstruction) from a "
        "JSON config, with a progress bar, atomic checkpoints and --resume.",
        epilog=_EXAMPLE, formatter_class=Formatter,
    )
    _add_rwpo_arguments(rwpo)
    return train


def _train(args: argparse.Namespace):
    """Check the options (device, output folder) and train; user errors become one-line CLIErrors."""
    if getattr(args, "train_command", "rwpo") != "rwpo":
        raise CLIError(f"unknown learned solver {args.train_command!r}")
    device = cli_device(args.device)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {out} exists and is not a folder; give a folder name for --out")
    check_writable_parent(out)  # an old checkpoint in the folder: train_from_config decides (--resume/--force)
    from invprob.solvers.learned.training import train_from_config

    try:
        return train_from_config(
            args.config, out_dir=args.out, resume=args.resume, progress=not args.no_progress, device=device,
            force=args.force, seed=args.seed,
        )
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from None


def run_train(args: argparse.Namespace) -> int:
    """Run the parsed ``train`` command.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser of :func:`add_train_parser`.

    Returns
    -------
    int
        The exit status: 0, or 2 with a one-line message on stderr for bad input (an unknown or absent
        ``--device``, a bad config, an output folder that holds a checkpoint without ``--resume``/``--force``).
    """
    try:
        result = _train(args)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    h = result.history
    last = {k: h[k][-1] for k in ("loss", "kl_knn", "sw1", "rel_l1", "crps") if h.get(k)}
    print(f"trained {result.model.config.attention} RWPO transformer -> {result.out_dir}")
    print("final: " + ", ".join(f"{k} = {v:.4g}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m invprob.apps.train_cli rwpo --config FILE --out DIR``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0, or 2 on bad input with one line on stderr).
    """
    parser = Parser(prog="invprob train", epilog=_EXAMPLE, formatter_class=Formatter)
    sub = parser.add_subparsers(dest="train_command", required=True)
    _add_rwpo_arguments(sub.add_parser("rwpo", help="train the sparse RWPO transformer", formatter_class=Formatter))
    try:
        args = parser.parse_args(argv)
    except CLIError as exc:
        print(f"invprob train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
