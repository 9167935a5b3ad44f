"""Simulated data shared by test modules."""

import glassvi


def add_true_programs(mdata) -> None:
    """Register a simulated MuData's planted programs on its genes and their linked peaks."""
    truth = mdata["rna"].varm["true_programs"]
    names = mdata.uns["simulation"]["program_names"]
    sets = {n: list(mdata["rna"].var_names[truth[:, i]]) for i, n in enumerate(names)}
    glassvi.pp.add_programs(mdata["rna"], sets, min_genes=1)
    glassvi.pp.add_peak_programs(mdata, links="gene")
