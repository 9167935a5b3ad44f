"""ProgramVI's named programs separate real cell types as well as a gene-set score does."""

import numpy as np
import pandas as pd
import pytest
import scvi
from sklearn.metrics import roc_auc_score

import glassvi
from glassvi.metrics import program_stability
from glassvi.model import ProgramVI

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}

#: marker genes of the sorted PBMC populations (biology knowledge, not taken from these data)
PBMC_MARKERS = {
    "CD14+ Monocyte": ["CD14", "LYZ", "S100A8", "S100A9", "FCN1", "VCAN", "CST3", "CSF1R"],
    "Dendritic": ["FCER1A", "CD1C", "CLEC10A", "HLA-DQA1", "HLA-DPB1", "CLEC4C", "LILRA4"],
    "CD19+ B": ["MS4A1", "CD79A", "CD79B", "CD19", "BANK1", "CD22", "TCL1A", "VPREB3"],
    "CD56+ NK": ["NKG7", "GNLY", "KLRD1", "KLRF1", "PRF1", "GZMB", "NCAM1", "FCGR3A"],
    "CD34+": ["CD34", "PRSS57", "SOX4", "SPINK2", "CRHBP", "MYB", "ERG", "EGFL7"],
    "CD8+ Cytotoxic T": ["CD8A", "CD8B", "GZMK", "GZMH", "CCL5", "CD3D", "CD3E", "CST7"],
}


@pytest.fixture(scope="module")
def pbmc():
    """Bundled PBMCs with one marker program per sorted population, mixed into Hallmark."""
    adata = glassvi.data.pbmc68k()
    sets = dict(glassvi.data.hallmark())
    sets.update({f"MARKER_{i}": genes for i, genes in enumerate(PBMC_MARKERS.values())})
    glassvi.pp.add_programs(adata, sets, min_genes=3)
    return adata


def marker_aurocs(activity: pd.DataFrame, adata) -> np.ndarray:
    labels = adata.obs["bulk_labels"].astype(str).to_numpy()
    return np.array(
        [
            roc_auc_score(labels == cell_type, activity[f"MARKER_{i}"])
            for i, cell_type in enumerate(PBMC_MARKERS)
        ]
    )


def train(adata, seed: int, epochs: int, **kwargs) -> pd.DataFrame:
    data = adata.copy()
    ProgramVI.setup_anndata(data, layer="counts")
    scvi.settings.seed = seed
    model = ProgramVI(data, **kwargs)
    model.train(max_epochs=epochs, **TRAIN_KW)
    return model.get_program_activity()


@pytest.mark.slow
def test_marker_programs_separate_their_cell_types(pbmc):
    # a plain gene-set score on the same data (scanpy's score_genes) reaches about 0.93 here;
    # without the activity anchor ProgramVI's hard-mask programs reach about 0.89
    aurocs = marker_aurocs(train(pbmc, seed=0, epochs=60), pbmc)
    print("marker-program AUROC", aurocs.round(3))
    assert aurocs.mean() >= 0.93
    assert aurocs.min() >= 0.75


def test_soft_mask_programs_keep_their_sign_across_seeds(pbmc):
    runs = [train(pbmc, seed, epochs=25, mask_mode="soft") for seed in (0, 1)]
    for activity in runs:
        assert marker_aurocs(activity, pbmc).min() > 0.6
    markers = [f"MARKER_{i}" for i in range(len(PBMC_MARKERS))]
    stability = program_stability(runs).loc[markers]
    assert (stability["sign_agreement"] == 1.0).all()
    assert stability["correlation"].min() > 0.5


def test_activities_follow_the_truth_where_programs_overlap():
    """Simulated programs share members; the joint anchor target tells them apart."""
    from glassvi.metrics import activity_correlation

    adata = glassvi.data.simulate(n_cells=600, n_genes=300, n_programs=12, n_batches=1, seed=0)
    names = list(adata.uns["simulation"]["program_names"])
    adata.varm["programs"] = pd.DataFrame(
        adata.varm["true_programs"], index=adata.var_names, columns=names
    )
    active = adata.uns["simulation"]["active_programs"]
    ProgramVI.setup_anndata(adata, layer="counts")
    scvi.settings.seed = 0
    model = ProgramVI(adata)
    model.train(max_epochs=60, **TRAIN_KW)
    activity = model.get_program_activity()[names].to_numpy()
    r = activity_correlation(activity, adata.obsm["true_activity"])[active]
    print("activity r with the truth", r.round(2))
    # measured 0.94 (lowest 0.86); with the anchor also training the encoder's hidden layers
    # (anchor_hidden=True) 0.90 (lowest 0.77), anchored to the mean member score instead 0.82
    # (lowest 0.56); decoupler MLM on the same data 0.92, scanpy score_genes 0.91
    assert np.nanmean(r) >= 0.92
    assert np.nanmin(r) >= 0.8


#: two CD8 T programs sharing their defining genes (CD8B, CD3E) in pbmc68k
NAIVE_CD8 = ("CD8+/CD45RA+ Naive Cytotoxic", ["CD8B", "CCR7", "LEF1", "SELL", "TCF7", "CD3E"])


def _target_auroc(adata, labels, markers) -> float:
    """Mean marker AUROC of the default joint anchor target itself (no training)."""
    import torch

    from glassvi.module import ProgramVAE

    sets = dict(glassvi.data.hallmark())
    sets.update({f"MARKER_{t}": genes for t, genes in markers.items()})
    glassvi.pp.add_programs(adata, sets, min_genes=3)
    mask = glassvi.tl.varm_df(adata, "programs")
    module = ProgramVAE(
        {"rna": adata.n_vars}, {"rna": "X"}, {"rna": "nb"}, {"rna": torch.from_numpy(mask.values)}
    )
    counts = adata.layers["counts"]
    counts = torch.from_numpy(np.asarray(counts.todense(), dtype=np.float32))
    target = pd.DataFrame(module.joint_score({"rna": counts}).numpy(), columns=mask.columns)
    labels = labels.astype(str).to_numpy()
    return float(np.mean([roc_auc_score(labels == t, target[f"MARKER_{t}"]) for t in markers]))


def test_anchor_target_separates_marker_programs_with_shared_and_own_members():
    import scanpy as sc

    # pbmc68k: the two CD8 T programs share CD8B and CD3E; a plain least-squares fit (ridge
    # 0, decoupler's MLM) gives the naive program only its other members (any naive T cell)
    # and reaches 0.928; the default keeps the shared members in both programs (0.939)
    pbmc = glassvi.data.pbmc68k()
    markers = {**PBMC_MARKERS, NAIVE_CD8[0]: NAIVE_CD8[1]}
    present = set(pbmc.var_names)
    markers = {t: g for t, g in markers.items() if len([x for x in g if x in present]) >= 3}
    assert NAIVE_CD8[0] in markers
    assert _target_auroc(pbmc, pbmc.obs["bulk_labels"], markers) >= 0.935
    # immune1k (2,000 most variable genes): marker programs with members of their own,
    # where the least-squares fit is best (0.950) and a ridge relative to program size
    # (the previous default, 0.945) blurs the DC program into CD4 T cells (CCR7); 0.948 now
    immune = glassvi.data.immune1k()
    logged = immune.copy()
    logged.X = logged.layers["counts"].copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    sc.pp.highly_variable_genes(logged, n_top_genes=2000, flavor="seurat")
    immune = immune[:, logged.var["highly_variable"].to_numpy()].copy()
    labels = immune.obs["cell_type_annotations"].astype(str)
    labels = labels.replace({"B_memory": "B", "B_naive": "B", "B_GC": "B"})
    assert _target_auroc(immune, labels, glassvi.data.immune1k_markers()) >= 0.947
