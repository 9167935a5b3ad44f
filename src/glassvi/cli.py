"""``glassvi run``: train an interpretable model on a data file and write its explanations."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from . import _keys
from ._atomic import check_output_dir, replace_file, staged_output_dir

MODELS = ("program", "linear")
BUNDLED_PROGRAMS = ("hallmark", "reactome", "go_bp")
#: programs carried by fewer effective genes than this are marked in the summary
FEW_GENES = 3.0
#: share of the cells that train; the rest are held out for the validation curves
VALIDATION_SPLIT = 0.9


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
            "plus a summary on stdout. The default model is ProgramVI with the Hallmark gene "
            "programs; --model linear trains LinearVI."
        ),
    )
    run.add_argument("data", nargs="?", default=None, help="input file (.h5ad, .h5mu, .h5)")
    run.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    run.add_argument("--batch-key", default=None, help="obs column of batches")
    run.add_argument("--labels-key", default=None, help="obs column of cell labels")
    run.add_argument(
        "--model", default="program", choices=MODELS, help="model to train (default program)"
    )
    run.add_argument(
        "--programs",
        default="hallmark",
        help="gene programs of --model program: hallmark (default), reactome, go_bp or a GMT file",
    )
    run.add_argument(
        "--n-denovo",
        type=int,
        default=None,
        help=(
            "de novo units of --model program: unnamed units that may use any gene and take the "
            "signal no program explains; listed apart from the programs, with no evidence test "
            "(default: ProgramVI's, 2; 0 trains none)"
        ),
    )
    run.add_argument(
        "--min-genes", type=int, default=5, help="smallest program kept, in genes (default 5)"
    )
    run.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    run.add_argument(
        "--n-latent", type=int, default=10, help="latent factors of --model linear (default 10)"
    )
    run.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--top", type=int, default=8, help="features listed per factor (default 8)")
    run.add_argument("--out", default="glassvi_results", help="output directory")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the contents of a non-empty --out (the new set replaces the old one whole)",
    )
    run.add_argument(
        "--attribution",
        default="integrated_gradients",
        help=(
            "post-hoc attribution of the cell-label predictions written next to the intrinsic "
            "weights when labels are given (a method of model.explain, or 'none'; default "
            "integrated_gradients)"
        ),
    )
    run.add_argument("--no-report", action="store_true", help="skip figures and report.html")
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


def _check_labels(data, labels_key: str | None) -> None:
    """Refuse a --labels-key that cannot train a label head (fewer than two labels)."""
    if labels_key is None or labels_key not in data.obs:
        return  # a missing key is reported by setup
    labels = data.obs[labels_key].dropna().astype(str)
    names = sorted(set(labels) - {"Unknown"})
    if len(names) < 2:
        found = f"only {names[0]!r}" if names else "no label"
        raise CLIError(
            f"--labels-key {labels_key!r} has {found} (besides 'Unknown'); a cell-label head "
            "needs at least two labels. Drop --labels-key or choose another column"
        )


def _gene_sets(spec: str):
    """Gene sets named by --programs: a bundled collection or a GMT file."""
    from . import data as gdata

    if spec in BUNDLED_PROGRAMS:
        return getattr(gdata, spec)()
    path = Path(spec)
    if not path.exists():
        raise CLIError(
            f"--programs {spec!r} is neither a bundled collection ({', '.join(BUNDLED_PROGRAMS)}) "
            "nor an existing GMT file"
        )
    return str(path)


def _add_programs(data, args) -> str:
    """Write the program masks that ProgramVI reads; returns a one-line description."""
    from mudata import MuData

    from . import data as gdata
    from . import pp

    gene_sets = _gene_sets(args.programs)
    if isinstance(data, MuData):
        if "rna" not in data.mod:
            raise CLIError("--model program needs an 'rna' modality to map gene programs")
        pp.add_programs(data["rna"], gene_sets, min_genes=args.min_genes)
        n_programs = data["rna"].varm["programs"].shape[1]
        if "atac" in data.mod:
            links = pp.link_peaks(data["atac"], gdata.gene_positions(), errors="drop")
            pp.add_peak_programs(data, links=links)
        return f"{n_programs} programs from {args.programs}"
    pp.add_programs(data, gene_sets, min_genes=args.min_genes)
    return f"{data.varm['programs'].shape[1]} programs from {args.programs}"


def _program_summary(model, top: int, n_programs: int = 10) -> str:
    evidence = model.program_evidence()
    denovo = [f"denovo_{i}" for i in range(model.module.n_denovo)]
    genes = {}
    for name in [*evidence.index, *denovo]:
        weights = model.get_program_genes(name)
        genes[name] = list(weights[weights["weight"] > 0].head(top).index)
    return format_program_evidence(evidence, genes, n_programs, denovo=denovo)


def format_program_evidence(
    evidence, genes: dict, n_programs: int = 10, denovo: list[str] | None = None
) -> str:
    """Text listing of programs by their evidence, marking the ones not to trust.

    The top list holds the programs the data support (``significant``) that three or more
    genes carry (``effective_genes >= 3``), strongest evidence first; below it, programs
    carried by one or two genes are marked ``[1-2 genes]`` and the strongest of the programs
    the data do not support ``[unsupported]``. De novo units (``denovo``: no gene set, so no
    evidence) never enter the list; they follow it, marked ``[de novo]``, with their genes.
    """
    few = evidence["effective_genes"].fillna(0) < FEW_GENES
    has_p = bool(evidence["pvalue"].notna().any())
    supported = evidence["significant"].astype(bool) if has_p else few | True
    level = evidence.attrs.get("fdr_level", 0.1)
    n_decoys = evidence.attrs.get("n_decoys", 0)
    if not has_p:
        evidence = evidence.sort_values("coherence", ascending=False, kind="stable")
        head = (
            "Programs by coherence (no decoy programs were trained, so there are no p-values; "
            f"top {n_programs} carried by 3 or more genes):"
        )
    else:
        head = (
            f"Programs the data support (FDR {level:g} against {n_decoys} decoy programs: "
            f"{int(supported.sum())} of {len(evidence)}), strongest evidence first, top "
            f"{n_programs} carried by 3 or more genes:"
        )

    def line(name, mark=""):
        row = evidence.loc[name]
        q = f"q {row['fdr']:.2g}, " if has_p else ""
        return (
            f"  {mark}{name} ({q}coherence {row['coherence']:.2f}, "
            f"{row['effective_genes']:.1f} effective genes): " + ", ".join(map(str, genes[name]))
        )

    listed = [n for n in evidence.index if supported[n] and not few[n]][:n_programs]
    lines = [head] + [line(n) for n in listed]
    if not listed:
        lines.append("  (none)")
    marked_few = [n for n in evidence.index if supported[n] and few[n]]
    unsupported = [n for n in evidence.index if not supported[n]]
    if marked_few or unsupported:
        lines.append(
            "Marked: [1-2 genes] supported but carried by one or two genes (effective_genes < "
            f"{FEW_GENES:g}); [unsupported] not supported by the data"
            + (f" (fdr > {level:g})" if has_p else "")
            + ":"
        )
        for name in marked_few[:n_programs]:
            top_gene = evidence.loc[name, "top_gene"]
            lines.append(line(name, "[1-2 genes] ") + f" (mostly {top_gene})")
        for name in unsupported[:3]:
            lines.append(line(name, "[unsupported] "))
        if len(unsupported) > 3:
            lines.append(f"  ... and {len(unsupported) - 3} more unsupported programs")
    if denovo:
        lines.append(
            "De novo units (not gene programs: they may use any gene and take the signal no "
            "program explains; no evidence test):"
        )
        for name in denovo:
            lines.append(f"  [de novo] {name}: " + ", ".join(map(str, genes.get(name, []))))
    return "\n".join(lines)


def _summary(model, top: int) -> str:
    lines = []
    for role in model.modalities:
        weights = model.get_loadings(role)
        lines.append(f"Top {role} features per factor (largest positive loadings):")
        for col in weights.columns:
            best = weights[col].sort_values(ascending=False).head(top)
            lines.append(f"  {col:>10}: " + ", ".join(map(str, best.index)))
    return "\n".join(lines)


def _class_evidence(data, key: str, top: int) -> str:
    """Rank the label attributions for and against each class into ``.uns``; a text summary."""
    from .tl import rank_features

    lines = ["Features with the strongest signed evidence for / against each class:"]
    tables = {}
    for direction in ("for", "against"):
        rank_features(data, key, direction=direction)
        tables[direction] = rank_features(data, key, direction=direction, n_top=top, inplace=False)
    for group, best in tables["for"].groupby("group", sort=False):
        worst = tables["against"].loc[tables["against"]["group"] == group, "names"]
        lines.append(f"  {group}: for {', '.join(best['names'])}")
        lines.append(f"  {' ' * len(str(group))}  against {', '.join(worst)}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the main job described by parsed command-line arguments."""
    if args.epochs < 1:
        raise CLIError(f"--epochs must be at least 1, got {args.epochs}")
    if args.n_latent < 1:
        raise CLIError(f"--n-latent must be at least 1, got {args.n_latent}")
    if args.attribution != "none":
        from .explain import ATTRIBUTION_METHODS

        if args.attribution not in ATTRIBUTION_METHODS:
            raise CLIError(
                f"--attribution {args.attribution!r} is not one of "
                f"{', '.join(ATTRIBUTION_METHODS)} or 'none'"
            )
    if args.n_denovo is not None and args.n_denovo < 0:
        raise CLIError(f"--n-denovo must be at least 0, got {args.n_denovo}")
    if args.model == "program" and args.programs not in BUNDLED_PROGRAMS:
        _gene_sets(args.programs)  # fail on a missing GMT before loading any data
    inputs = [args.data, args.programs if args.programs not in BUNDLED_PROGRAMS else None]
    out = check_output_dir(args.out, overwrite=args.overwrite, inputs=inputs)

    import scvi
    from mudata import MuData

    from .model import LinearVI, ProgramVI
    from .train import quiet_training

    with quiet_training():  # no "Seed set to ..." line from Lightning
        scvi.settings.seed = args.seed
    t0 = time.perf_counter()
    data, description = _load(args.data, args)
    print(f"glassvi: data {description}: {data.n_obs} cells", flush=True)
    _check_labels(data, args.labels_key)
    if args.model == "program":
        model_cls, prefix = ProgramVI, _keys.PROGRAMVI
        weights = _keys.weights(prefix, _keys.PROGRAMVI_WEIGHTS)
        print(f"glassvi: {_add_programs(data, args)}", flush=True)
        _setup(model_cls, data, args)
        model = model_cls(data, n_denovo=args.n_denovo)
    else:
        model_cls, prefix = LinearVI, _keys.LINEARVI
        weights = _keys.weights(prefix, _keys.LINEARVI_WEIGHTS)
        _setup(model_cls, data, args)
        model = model_cls(data, n_latent=args.n_latent)
    # a tenth of the cells is held out, so the report shows validation curves next to the
    # training curves (too few cells to spare: all of them train)
    train_size = VALIDATION_SPLIT if data.n_obs >= 50 else 1.0
    print(
        f"glassvi: training {model_cls.__name__} for {args.epochs} epochs"
        + (f" ({1 - train_size:.0%} of cells held out for validation)" if train_size < 1 else ""),
        flush=True,
    )
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        train_size=train_size,
        check_val_every_n_epoch=1 if train_size < 1 else None,
        enable_progress_bar=not args.quiet,
    )
    model.explain()
    attribution_key = None
    attribute = args.attribution != "none" and model.has_classifier
    if attribute:
        from ._optional import available
        from .explain import METHODS

        backend = METHODS[args.attribution].backend
        if not available(backend):
            print(
                f"glassvi: attribution skipped: --attribution {args.attribution} needs the "
                f"optional package {backend!r}; install it with "
                'pip install "glassvi[attribution]" (or pass --attribution none)',
                flush=True,
            )
            attribute = False
    if attribute:
        print(f"glassvi: attributing label predictions ({args.attribution})", flush=True)
        model.explain(
            method=args.attribution, target="labels", n_steps=20, progress_bar=not args.quiet
        )
        attribution_key = _keys.attribution(prefix, args.attribution, "labels")
        print(_class_evidence(data, attribution_key, args.top), flush=True)
    is_mudata = isinstance(data, MuData)
    result_path = out / ("results.h5mu" if is_mudata else "results.h5ad")
    summary = _program_summary(model, args.top) if args.model == "program" else None
    print(summary or _summary(model, args.top))
    keys = f"obsm['{_keys.latent(prefix)}'], varm['{weights}'], uns['{prefix}']"
    if args.model == "program":
        keys += ", varm['programs'] (the program masks)"
    if attribution_key is not None:
        keys += f", varm['{attribution_key}'], obsm['{attribution_key}']"
        keys += f", uns['{_keys.rank_features()}'], uns['{_keys.rank_features('against')}']"
    # everything is written into a new folder that replaces --out only once it is complete
    with staged_output_dir(out) as stage:
        write = data.write if is_mudata else data.write_h5ad
        replace_file(write, stage / result_path.name)
        model.save(stage / "model", overwrite=True, save_anndata=False)
        if not args.no_report:
            from .pl import write_report

            parameters = {
                "model": args.model,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "train_size": train_size,
                "layer": args.layer,
                "batch_key": args.batch_key,
                "labels_key": args.labels_key,
                "attribution": args.attribution if attribution_key else "none",
            }
            if args.model == "program":
                parameters.update(
                    programs=args.programs,
                    n_denovo=int(model.module.n_denovo),  # resolved from ProgramVI's default
                    min_genes=args.min_genes,
                )
            else:
                parameters["n_latent"] = args.n_latent
            run_info = {
                "command": getattr(args, "command_line", None),
                "input": description,
                "seed": args.seed,
                "parameters": parameters,
            }
            title = f"{model_cls.__name__} on {description}"
            paths = write_report(data, model, stage, title=title, run_info=run_info)
            n_figures = sum(p.suffix == ".png" for p in paths.values())
            n_tables = sum(p.suffix == ".csv" for p in paths.values())
    if not args.no_report:
        print(
            f"glassvi: wrote {out / 'report.html'}, {n_figures} figures and {n_tables} CSV tables",
            flush=True,
        )
    print(
        f"glassvi: wrote {result_path} (keys: {keys}) and {out / 'model'} in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return 0


def _plain_scvi_logging() -> None:
    """Log scvi-tools' messages as plain lines when the output is not a terminal.

    scvi-tools logs through rich with colours forced on, which writes ANSI escape codes into
    redirected logs. The command line owns its process, so it may swap the handler.
    """
    if sys.stdout.isatty():
        return
    scvi_logger = logging.getLogger("scvi")
    for handler in list(scvi_logger.handlers):
        if type(handler).__name__ == "RichHandler":
            scvi_logger.removeHandler(handler)
            plain = logging.StreamHandler(sys.stderr)
            plain.setLevel(handler.level)
            plain.setFormatter(logging.Formatter("glassvi: %(levelname)s %(message)s"))
            scvi_logger.addHandler(plain)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glassvi`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["glassvi", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="glassvi: %(message)s")
    _plain_scvi_logging()
    try:
        return run(args)
    except (CLIError, ValueError, KeyError, TypeError, FileNotFoundError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"glassvi: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
