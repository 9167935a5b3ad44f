import json
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from lightning.pytorch import Callback
from scvi.dataloaders import AnnDataLoader, DataSplitter

import glassvi
from glassvi.model import LinearVI
from glassvi.module import nonzero_key
from glassvi.train import (
    GlassDataSplitter,
    MinibatchDataset,
    MinibatchSampler,
    cell_registry_keys,
)

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def rna():
    adata = glassvi.data.simulate(n_cells=300, n_genes=80, n_programs=5, seed=4)
    adata.obs["depth"] = np.log1p(np.asarray(adata.X.sum(1)).ravel())
    return adata


@pytest.fixture
def model(rna):
    adata = rna.copy()
    LinearVI.setup_anndata(
        adata,
        layer="counts",
        batch_key="batch",
        labels_key="cell_type",
        continuous_covariate_keys=["depth"],
    )
    return LinearVI(adata, n_latent=3, n_hidden=16)


def test_batches_match_scvi_loader(model):
    manager = model.adata_manager
    rows = np.array([5, 17, 3, 250, 99, 0])
    ours = MinibatchDataset(manager)[rows]
    theirs = next(iter(AnnDataLoader(manager, indices=rows, batch_size=len(rows))))
    assert set(ours) - {nonzero_key("X")} == set(theirs)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0)
    # the counts really are the registered layer's rows, in the requested order
    expected = model.adata.layers["counts"][rows].toarray()
    np.testing.assert_array_equal(ours["X"].numpy(), expected)
    assert ours["extra_continuous_covs"].shape == (len(rows), 1)


def test_split_matches_scvi_and_epoch_covers_each_cell_once(model):
    kw = {"train_size": 0.8, "validation_size": 0.1, "batch_size": 32}
    ours = GlassDataSplitter(model.adata_manager, **kw)
    theirs = DataSplitter(model.adata_manager, **kw)
    ours.setup()
    theirs.setup()
    for name in ("train_idx", "val_idx", "test_idx"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))
    loader = ours.train_dataloader()
    X = model.adata.layers["counts"]
    row_of = {X[i].toarray().tobytes(): i for i in range(X.shape[0])}
    seen, sizes = [], []
    for batch in loader:
        sizes.append(batch["X"].shape[0])
        seen += [row_of[r.numpy().tobytes()] for r in batch["X"]]
    assert len(sizes) == len(loader) == int(np.ceil(240 / 32))
    assert max(sizes) == 32
    assert sorted(seen) == sorted(ours.train_idx.tolist())
    # a new epoch reshuffles, reproducibly from the seed
    sampler = loader.sampler
    first = np.concatenate(list(sampler))
    sampler.set_epoch(1)
    second = np.concatenate(list(sampler))
    assert not np.array_equal(first, second)
    assert sorted(first) == sorted(second)
    sampler.set_epoch(0)
    np.testing.assert_array_equal(np.concatenate(list(sampler)), first)
    assert [b["X"].shape[0] for b in ours.val_dataloader()] == [30]


def test_sampler_shards_and_blocks():
    idx = np.arange(0, 200, 2)  # 100 cells
    shards = [
        np.concatenate(list(MinibatchSampler(idx, 16, num_replicas=3, rank=r, seed=1)))
        for r in range(3)
    ]
    assert [len(s) for s in shards] == [34, 34, 34]
    union = np.concatenate(shards)
    assert set(union) == set(idx) and len(union) - len(set(union)) == 2  # wrap-around padding
    blocked = list(MinibatchSampler(idx, 20, block_size=5, seed=0))
    runs = [np.sort(b) for b in blocked]
    # each minibatch is made of 4 runs of 5 consecutive cells
    assert all(np.sum(np.diff(r) != 2) <= 3 for r in runs)
    assert sorted(np.concatenate(blocked)) == idx.tolist()
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchSampler(idx, 0)


def test_sparse_counts_are_never_densified_whole(model):
    splitter = GlassDataSplitter(model.adata_manager, batch_size=16)
    splitter.setup()
    held = splitter.dataset.sources["X"].matrix
    assert sp.issparse(held) and held.format == "csr"
    assert held.nnz == model.adata.layers["counts"].nnz
    batches = list(splitter.train_dataloader())
    assert all(b["X"].shape[0] <= 16 for b in batches)
    assert sum(b["X"].shape[0] for b in batches) == len(splitter.train_idx)


def test_load_sparse_tensor_densifies_after_transfer(model):
    splitter = GlassDataSplitter(model.adata_manager, batch_size=8, load_sparse_tensor=True)
    splitter.setup()
    batch = next(iter(splitter.train_dataloader()))
    assert batch["X"].layout == torch.sparse_csr
    dense = splitter.on_after_batch_transfer(batch, 0)["X"]
    assert dense.layout == torch.strided
    torch.testing.assert_close(dense, batch["X"].to_dense())


@pytest.mark.parametrize("load_sparse_tensor", [False, True])
def test_sparse_minibatches_carry_their_nonzero_positions(load_sparse_tensor):
    sparse = sp.random(200, 50, density=0.05, format="csr", random_state=1, dtype=np.float32)
    sparse.data = np.ceil(sparse.data * 10)
    dense = sp.random(200, 50, density=0.6, format="csr", random_state=2, dtype=np.float32)
    dense.data = np.ceil(dense.data * 10)
    for matrix, expect_positions in ((sparse, True), (dense, False)):
        adata = ad.AnnData(matrix)
        LinearVI.setup_anndata(adata)
        splitter = GlassDataSplitter(
            LinearVI(adata).adata_manager, batch_size=32, load_sparse_tensor=load_sparse_tensor
        )
        splitter.setup()
        batch = splitter.on_after_batch_transfer(next(iter(splitter.train_dataloader())), 0)
        assert list(batch)[0] == "X"  # Lightning reads the minibatch size off the first tensor
        assert (nonzero_key("X") in batch) == expect_positions
        if expect_positions:
            np.testing.assert_array_equal(
                batch[nonzero_key("X")].numpy(), np.flatnonzero(batch["X"].numpy().reshape(-1))
            )


def test_model_trains_with_fast_splitter(model):
    model.train(max_epochs=3, batch_size=64, train_size=0.9, **TRAIN_KW)
    assert isinstance(model.trainer.datamodule, GlassDataSplitter)
    assert len(model.train_indices) == 270 and len(model.validation_indices) == 30
    elbo = model.history["elbo_train"].to_numpy(dtype=float).ravel()
    assert np.all(np.isfinite(elbo)) and elbo[-1] < elbo[0]


def test_backed_h5ad_trains_out_of_core(rna, tmp_path):
    path = tmp_path / "counts.h5ad"
    small = ad.AnnData(rna.layers["counts"].copy(), obs=rna.obs[["batch"]].copy())
    small.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    LinearVI.setup_anndata(backed, batch_key="batch")
    model = LinearVI(backed, n_latent=3, n_hidden=16)
    in_memory = rna.copy()
    LinearVI.setup_anndata(in_memory, layer="counts", batch_key="batch")
    # library size statistics are streamed from disk and equal the in-memory ones
    ref = LinearVI(in_memory, n_latent=3, n_hidden=16)
    torch.testing.assert_close(model.module.library_log_means, ref.module.library_log_means)
    splitter = GlassDataSplitter(model.adata_manager, batch_size=32)
    splitter.setup()
    assert splitter.dataset.backed
    loader = splitter.train_dataloader()
    rows = np.sort(next(iter(loader.sampler)))
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["X"].numpy(), rna.layers["counts"][rows].toarray())
    model.train(max_epochs=2, batch_size=32, **TRAIN_KW)
    assert backed.isbacked and not sp.issparse(backed.X)  # still on disk
    elbo = model.history["elbo_train"].to_numpy(dtype=float).ravel()
    assert np.all(np.isfinite(elbo))
    assert np.isfinite(float(sum(model.get_reconstruction_error().values())))


def test_mudata_minibatches_hold_both_modalities():
    mdata = glassvi.data.simulate(
        n_cells=120, n_genes=40, n_peaks=90, modality="multiome", n_programs=4, seed=3
    )
    LinearVI.setup_mudata(mdata, batch_key="batch")
    model = LinearVI(mdata, n_latent=3, n_hidden=16)
    ds = MinibatchDataset(model.adata_manager)
    assert set(ds.keys) == {"X", "atac", "batch", "labels"}
    rows = np.array([7, 1, 60])
    batch = ds[rows]
    np.testing.assert_array_equal(batch["X"].numpy(), _dense(mdata["rna"].X[rows]))
    np.testing.assert_array_equal(batch["atac"].numpy(), _dense(mdata["atac"].X[rows]))
    model.train(max_epochs=2, batch_size=32, **TRAIN_KW)
    assert np.all(np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)))


def test_feature_level_fields_are_not_loaded(rna):
    from scvi import REGISTRY_KEYS
    from scvi.data import AnnDataManager, fields

    adata = rna.copy()
    adata.varm["programs"] = np.eye(adata.n_vars, 6, dtype=bool)
    manager = AnnDataManager(
        fields=[
            fields.LayerField(REGISTRY_KEYS.X_KEY, "counts", is_count_data=True),
            fields.CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, "batch"),
            fields.VarmField("programs", "programs"),
        ]
    )
    manager.register_fields(adata)
    assert cell_registry_keys(manager) == ["X", "batch"]
    batch = MinibatchDataset(manager)[np.arange(10)]
    assert set(batch) - {nonzero_key("X")} == {"X", "batch"}
    assert batch["batch"].dtype == torch.int64
    with pytest.raises(ValueError, match="not one per cell"):
        MinibatchDataset(manager, keys=["X", "programs"])
    with pytest.raises(KeyError, match="not in the data registry"):
        MinibatchDataset(manager, keys=["masks"])


def _dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, scvi
    import lightning.pytorch as pl
    import glassvi

    scvi.settings.seed = 0
    adata = glassvi.data.simulate(n_cells=300, n_genes=60, n_programs=4, seed=0)
    glassvi.model.LinearVI.setup_anndata(adata, batch_key="batch")
    model = glassvi.model.LinearVI(adata, n_latent=3, n_hidden=16)

    class Record(pl.Callback):
        seen = []

        def on_train_epoch_start(self, trainer, pl_module):
            sampler = trainer.train_dataloader.sampler
            self.seen.append(np.concatenate(list(sampler)).tolist())

    model.train(
        max_epochs=2, batch_size=32, strategy="ddp_find_unused_parameters_true", devices=2,
        accelerator="cpu", enable_progress_bar=False, callbacks=[Record()],
    )
    rank = model.trainer.global_rank
    weight = model.module.decoders["rna"].weight.detach()
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({
            "world": model.trainer.world_size, "steps": int(model.trainer.global_step),
            "seen": Record.seen, "train_idx": np.asarray(model.train_indices).tolist(),
            "weight": weight.numpy().ravel().tolist(),
        }, f)
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,  # a hang fails; how long two processes take is not this test's business
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    train_idx = set(ranks[0]["train_idx"])
    assert len(train_idx) == 270
    for epoch in (0, 1):
        shards = [set(r["seen"][epoch]) for r in ranks]
        # each process sees half of the training cells; together they see all, disjointly
        assert [len(r["seen"][epoch]) for r in ranks] == [135, 135]
        assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == train_idx
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]
    # same number of steps everywhere, and DDP kept the replicas identical
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2 * 5
    np.testing.assert_allclose(ranks[0]["weight"], ranks[1]["weight"], rtol=1e-6)
    assert np.all(np.isfinite(ranks[0]["weight"]))


def test_seed_controls_the_order(model):
    scvi.settings.seed = 3
    a = np.concatenate(list(MinibatchSampler(np.arange(50), 10)))
    scvi.settings.seed = 4
    b = np.concatenate(list(MinibatchSampler(np.arange(50), 10)))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("load_sparse_tensor", [False, True])
def test_duplicate_entries_are_summed_and_listed_once(load_sparse_tensor):
    # a CSR matrix that is not in canonical form: row 0 stores column 3 twice
    data = np.array([2.0, 1.0, 4.0, 5.0], dtype=np.float32)
    indices = np.array([3, 3, 7, 1], dtype=np.int32)
    indptr = np.array([0, 3] + [4] * 99, dtype=np.int32)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(100, 40))
    assert not matrix.has_canonical_format
    adata = ad.AnnData(matrix)
    LinearVI.setup_anndata(adata)
    splitter = GlassDataSplitter(
        LinearVI(adata).adata_manager,
        batch_size=100,
        train_size=1.0,
        load_sparse_tensor=load_sparse_tensor,
        shuffle_training=False,
    )
    splitter.setup()
    batch = splitter.on_after_batch_transfer(next(iter(splitter.train_dataloader())), 0)
    dense = batch["X"].numpy()
    row0 = int(np.flatnonzero(np.asarray(splitter.train_idx) == 0)[0])
    assert dense[row0, 3] == 3.0 and dense[row0, 7] == 4.0
    positions = batch[nonzero_key("X")].numpy()
    assert len(np.unique(positions)) == len(positions)
    np.testing.assert_array_equal(np.sort(positions), np.flatnonzero(dense.reshape(-1)))


def _multiome(n_cells=150, seed=3):
    return glassvi.data.simulate(
        n_cells=n_cells, n_genes=40, n_peaks=120, modality="multiome", n_programs=4, seed=seed
    )


@pytest.mark.parametrize("load_sparse_tensor", [False, True])
def test_sparse_training_keys_stay_sparse_with_their_positions(load_sparse_tensor):
    mdata = _multiome()
    LinearVI.setup_mudata(mdata, batch_key="batch")
    model = LinearVI(mdata, n_latent=3, n_hidden=16)
    assert model.module.sparse_input_keys() == ["atac"]
    splitter = GlassDataSplitter(
        model.adata_manager,
        batch_size=32,
        train_size=0.8,
        load_sparse_tensor=load_sparse_tensor,
        sparse_training_keys=["atac"],
        shuffle_training=False,
    )
    splitter.setup()
    loader = splitter.train_dataloader()
    rows = next(iter(loader.sampler))
    batch = splitter.on_after_batch_transfer(next(iter(loader)), 0)
    assert list(batch)[0] == "X"
    atac = batch["atac"]
    assert atac.layout == torch.sparse_csr and batch["X"].layout == torch.strided
    expected = _dense(mdata["atac"].X[rows]).astype(np.float32)
    np.testing.assert_array_equal(atac.to_dense().numpy(), expected)
    # the positions list the stored entries in storage order
    positions = batch[nonzero_key("atac")].numpy()
    np.testing.assert_array_equal(positions, np.flatnonzero(expected.reshape(-1)))
    np.testing.assert_array_equal(atac.values().numpy(), expected.reshape(-1)[positions])
    # validation minibatches stay dense
    val = splitter.on_after_batch_transfer(next(iter(splitter.val_dataloader())), 0)
    assert val["atac"].layout == torch.strided


def test_sparse_keys_give_positions_at_any_density(rna):
    adata = rna.copy()
    LinearVI.setup_anndata(adata, layer="counts")
    ds = MinibatchDataset(LinearVI(adata).adata_manager, sparse_keys=["X"])
    rows = np.array([4, 0, 77])
    dense = adata.layers["counts"][rows].toarray()
    assert (dense > 0).mean() > 0.25  # denser than the threshold of the dense path
    batch = ds[rows]
    np.testing.assert_array_equal(batch["X"].to_dense().numpy(), dense)
    np.testing.assert_array_equal(
        batch[nonzero_key("X")].numpy(), np.flatnonzero(dense.reshape(-1))
    )
    assert ds.with_sparse_keys([])[rows]["X"].layout == torch.strided
    assert ds.with_sparse_keys([]).sources is ds.sources


class _Layouts(Callback):
    def __init__(self):
        self.layouts = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.layouts.add(batch["atac"].layout)


@pytest.mark.parametrize("zero_sample_fraction", [0.1, 1.0])
def test_linearvi_trains_identically_on_sparse_minibatches(zero_sample_fraction):
    mdata = _multiome(n_cells=200, seed=5)
    LinearVI.setup_mudata(mdata, batch_key="batch")
    states, layouts = [], []
    for keys in (None, []):  # default: the model's sparse keys; []: dense minibatches
        scvi.settings.seed = 0
        model = LinearVI(mdata, n_latent=3, n_hidden=16, zero_sample_fraction=zero_sample_fraction)
        seen = _Layouts()
        kwargs = {} if keys is None else {"datasplitter_kwargs": {"sparse_training_keys": keys}}
        model.train(
            max_epochs=2,
            batch_size=64,
            train_size=0.8,
            check_val_every_n_epoch=1,
            callbacks=[seen],
            **kwargs,
            **TRAIN_KW,
        )
        states.append({k: v.clone() for k, v in model.module.state_dict().items()})
        layouts.append(seen.layouts)
        losses = model.history["validation_loss"].to_numpy(dtype=float)
        assert np.all(np.isfinite(losses))
    assert layouts == [{torch.sparse_csr}, {torch.strided}]
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0, msg=key)


def test_programvi_trains_identically_on_sparse_minibatches():
    # the activity anchor reads the sparse minibatch at its stored entries
    from glassvi.model import ProgramVI
    from simulated import add_true_programs

    mdata = _multiome(n_cells=200, seed=5)
    add_true_programs(mdata)
    ProgramVI.setup_mudata(mdata, batch_key="batch")
    states, layouts = [], []
    for keys in (None, []):
        scvi.settings.seed = 0
        model = ProgramVI(mdata, n_hidden=16)
        assert model.module.sparse_input_keys() == ["atac"]
        assert model.module.activity_anchor > 0 and model.module.n_decoys > 0
        seen = _Layouts()
        kwargs = {} if keys is None else {"datasplitter_kwargs": {"sparse_training_keys": keys}}
        model.train(
            max_epochs=2, batch_size=64, train_size=0.8, callbacks=[seen], **kwargs, **TRAIN_KW
        )
        states.append({k: v.clone() for k, v in model.module.state_dict().items()})
        layouts.append(seen.layouts)
    assert layouts == [{torch.sparse_csr}, {torch.strided}]
    for key, value in states[0].items():
        torch.testing.assert_close(value, states[1][key], rtol=0, atol=0, msg=key)
