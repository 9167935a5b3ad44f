"""``glassvi run``: train an interpretable model on a data file and write its explanations."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

MODELS = ("linear",)


class CLIError(Exception):
    """An error reported to the user as one line, with a non-zero exit code."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glassvi",
        description="Interpretable deep generative models for single-cell omics.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="train a model and write its explanations",
        description=(
            "Train a glassvi model on DATA (.h5ad, .h5mu or a 10x .h5 file; default: the bundled "
            "immune1k data set) and write DIR/results.h5ad (or .h5mu) with the explanations, "
            "plus a summary of the top features of each factor on stdout."
        ),
    )
    run.add_argument("data", nargs="?", default=None, help="input file (.h5ad, .h5mu, .h5)")
    run.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    run.add_argument("--batch-key", default=None, help="obs column of batches")
    run.add_argument("--labels-key", default=None, help="obs column of cell labels")
    run.add_argument("--model", default="linear", choices=MODELS, help="model to train")
    run.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    run.add_argument("--n-latent", type=int, default=10, help="latent factors (default 10)")
    run.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--top", type=int, default=8, help="features listed per factor (default 8)")
    run.add_argument("--out", default="glassvi_results", help="output directory")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load(path: str | None, args) -> tuple[object, str]:
    """Read the input, returning the data and a short description of it."""
    from . import data as gdata

    if path is None:
        adata = gdata.immune1k()
        if args.labels_key is None:
            args.labels_key = "cell_type_annotations"
        return adata, "bundled immune1k (1,000 immune cells x 6,397 genes)"
    p = Path(path)
    if not p.exists():
        raise CLIError(f"input file {path!r} does not exist")
    suffix = "".join(p.suffixes[-1:]).lower()
    if suffix == ".h5ad":
        import anndata as ad

        return ad.read_h5ad(p), str(p)
    if suffix == ".h5mu":
        import mudata as md

        return md.read_h5mu(p), str(p)
    if suffix == ".h5":
        return gdata.read_10x_multiome(p), str(p)
    raise CLIError(f"cannot read {path!r}: expected a .h5ad, .h5mu or 10x .h5 file")


def _setup(model_cls, data, args) -> None:
    from mudata import MuData

    keys = {"batch_key": args.batch_key, "labels_key": args.labels_key}
    if isinstance(data, MuData):
        model_cls.setup_mudata(data, rna_layer=args.layer, atac_layer=args.layer, **keys)
    else:
        model_cls.setup_anndata(data, layer=args.layer, **keys)


def _summary(model, top: int) -> str:
    lines = []
    for role in model.modalities:
        weights = model.get_loadings(role)
        lines.append(f"Top {role} features per factor (largest positive loadings):")
        for col in weights.columns:
            best = weights[col].sort_values(ascending=False).head(top)
            lines.append(f"  {col:>10}: " + ", ".join(map(str, best.index)))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the main job described by parsed command-line arguments."""
    if args.epochs < 1:
        raise CLIError(f"--epochs must be at least 1, got {args.epochs}")
    if args.n_latent < 1:
        raise CLIError(f"--n-latent must be at least 1, got {args.n_latent}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a directory")

    import scvi
    from mudata import MuData

    from .model import LinearVI

    scvi.settings.seed = args.seed
    t0 = time.perf_counter()
    data, description = _load(args.data, args)
    print(f"glassvi: data {description}: {data.n_obs} cells", flush=True)
    model_cls = LinearVI
    _setup(model_cls, data, args)
    model = model_cls(data, n_latent=args.n_latent)
    print(f"glassvi: training {model_cls.__name__} for {args.epochs} epochs", flush=True)
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        enable_progress_bar=not args.quiet,
    )
    model.explain()
    out.mkdir(parents=True, exist_ok=True)
    is_mudata = isinstance(data, MuData)
    result_path = out / ("results.h5mu" if is_mudata else "results.h5ad")
    data.write(result_path) if is_mudata else data.write_h5ad(result_path)
    model.save(out / "model", overwrite=True, save_anndata=False)
    print(_summary(model, args.top))
    print(
        f"glassvi: wrote {result_path} (keys: obsm['X_linearvi'], varm['linearvi_loadings'], "
        f"uns['linearvi']) and {out / 'model'} in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glassvi`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="glassvi: %(message)s")
    try:
        return run(args)
    except (CLIError, ValueError, KeyError, TypeError, FileNotFoundError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"glassvi: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
