"""``invprob train rwpo --config FILE``: the training sub-command, to be wired into :mod:`invprob.apps.cli`.

The CLI owner adds it with::

    from invprob.apps.train_cli import add_train_parser, run_train
    add_train_parser(subparsers)          # registers "train" (with its "rwpo" sub-command)
    ...
    if args.command == "train": return run_train(args)

It can also run on its own: ``python -m invprob.apps.train_cli rwpo --config FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_train_parser", "main", "run_train"]

_EXAMPLE = """example:
  invprob train rwpo --config examples/configs/rwpo_sparse2d.json --out runs/sparse2d
  invprob train rwpo --config examples/configs/rwpo_sparse2d.json --out runs/sparse2d --resume
"""


def _add_rwpo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="JSON training config (see examples/configs/rwpo_*.json)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, model/, history.json, config.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (identical continuation)")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in OUT")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--seed", type=int, default=None, help="override the config's training seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` (with the ``rwpo`` sub-command) on an ``argparse`` sub-parsers object."""
    train = subparsers.add_parser(
        "train", help="train a learned solver", description="Train a learned solver.", epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = train.add_subparsers(dest="train_command", required=True)
    rwpo = sub.add_parser(
        "rwpo", help="train the sparse RWPO transformer from a JSON config",
        description="Train the sparse RWPO transformer (generative sampling or amortised reconstruction) from a "
        "JSON config, with a progress bar, atomic checkpoints and --resume.",
        epilog=_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_rwpo_arguments(rwpo)
    return train


def run_train(args: argparse.Namespace) -> int:
    """Run the parsed ``train`` command; returns the exit status (2 with a one-line message on bad input)."""
    if getattr(args, "train_command", "rwpo") != "rwpo":
        print(f"invprob train: unknown learned solver {args.train_command!r}", file=sys.stderr)
        return 2
    import json
    import tempfile
    from pathlib import Path

    from invprob.solvers.learned.training import train_from_config

    config = Path(args.config)
    tmp = None
    try:
        if args.seed is not None:
            spec = json.loads(config.read_text())
            spec.setdefault("training", {})["seed"] = int(args.seed)
            tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(spec, tmp)
            tmp.close()
            config = Path(tmp.name)
        result = train_from_config(
            config, out_dir=args.out, resume=args.resume, progress=not args.no_progress, device=args.device,
            force=args.force,
        )
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"invprob train rwpo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    h = result.history
    last = {k: h[k][-1] for k in ("loss", "kl_knn", "sw1", "rel_l1", "crps") if h.get(k)}
    print(f"trained {result.model.config.attention} RWPO transformer -> {result.out_dir}")
    print("final: " + ", ".join(f"{k} = {v:.4g}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m invprob.apps.train_cli rwpo --config FILE --out DIR``."""
    parser = argparse.ArgumentParser(prog="invprob train", epilog=_EXAMPLE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="train_command", required=True)
    _add_rwpo_arguments(sub.add_parser("rwpo", help="train the sparse RWPO transformer"))
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
