import platform
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import scvi
import torch

import glassvi
from glassvi.model import LinearVI
from glassvi.module import LinearFeatureDecoder
from glassvi.train import (
    GlassTrainingPlan,
    release_free_memory,
    restore_cpu_allocator,
    tune_cpu_allocator,
)
from glassvi.train._allocator import startup_thresholds

TRAIN_KW = {"enable_progress_bar": False, "accelerator": "cpu"}


class StepLosses(pl.Callback):
    """Records each training step's loss and number of cells."""

    def __init__(self):
        self.epochs: list[list[tuple[float, int]]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append([])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.epochs[-1].append((float(loss), int(batch["X"].shape[0])))


@pytest.fixture(scope="module")
def adata():
    adata = glassvi.data.simulate(n_cells=260, n_genes=60, n_programs=4, seed=11)
    LinearVI.setup_anndata(adata, layer="counts", batch_key="batch", labels_key="cell_type")
    return adata


def test_epoch_metrics_are_cell_weighted_means_of_the_steps(adata):
    model = LinearVI(adata, n_latent=4, classifier=True)
    steps = StepLosses()
    model.train(
        max_epochs=3,
        batch_size=64,
        check_val_every_n_epoch=1,
        callbacks=[steps],
        plan_kwargs={"n_epochs_kl_warmup": 2},
        **TRAIN_KW,
    )
    hist = model.history
    for key in (
        "train_loss",
        "elbo_train",
        "reconstruction_loss_train",
        "kl_local_train",
        "kl_global_train",
        "classification_loss_train",
        "kl_weight",
        "validation_loss",
        "elbo_validation",
    ):
        assert key in hist and len(hist[key]) == 3, key
    for epoch, recorded in enumerate(steps.epochs):
        losses = np.array([loss for loss, _ in recorded])
        cells = np.array([n for _, n in recorded])
        expected = float((losses * cells).sum() / cells.sum())
        assert hist["train_loss"].iloc[epoch, 0] == pytest.approx(expected, rel=1e-5)
    rec = hist["reconstruction_loss_train"].to_numpy(dtype=float).ravel()
    kl = hist["kl_local_train"].to_numpy(dtype=float).ravel()
    np.testing.assert_allclose(
        hist["elbo_train"].to_numpy(dtype=float).ravel(), rec + kl, rtol=1e-5
    )
    # KL warm-up over two epochs: weights 0, 0.5, 1
    np.testing.assert_allclose(hist["kl_weight"].to_numpy(dtype=float).ravel(), [0.0, 0.5, 1.0])
    cls = hist["classification_loss_train"].to_numpy(dtype=float).ravel()
    weight = model.module.classification_ratio
    np.testing.assert_allclose(
        hist["train_loss"].to_numpy(dtype=float).ravel(),
        rec + hist["kl_weight"].to_numpy(dtype=float).ravel() * kl + weight * cls,
        rtol=1e-4,
    )


def test_per_step_logging_is_still_available(adata):
    model = LinearVI(adata, n_latent=4)
    model.train(max_epochs=1, batch_size=64, plan_kwargs={"on_step": True}, **TRAIN_KW)
    assert any(k.startswith("train_loss") for k in model.history)


def test_adam_is_fused_and_custom_optimisers_are_kept(adata):
    model = LinearVI(adata, n_latent=4)
    plan = GlassTrainingPlan(model.module)
    optimizer = plan.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"]
    assert optimizer.defaults["weight_decay"] == 0.0
    plan = GlassTrainingPlan(model.module, optimizer="AdamW", lr=5e-3)
    optimizer = plan.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 5e-3
    plan = GlassTrainingPlan(
        model.module,
        optimizer="Custom",
        optimizer_creator=lambda params: torch.optim.SGD(params, lr=0.1),
    )
    assert isinstance(plan.configure_optimizers()["optimizer"], torch.optim.SGD)


def test_category_offsets_equal_row_lookups():
    torch.manual_seed(0)
    dec = LinearFeatureDecoder(3, 7, n_batch=4, n_cats_per_cov=[2, 5], n_continuous_cov=1)
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_()
    z = torch.randn(10, 3)
    batch = torch.randint(0, 4, (10, 1))
    cats = torch.stack([torch.randint(0, 2, (10,)), torch.randint(0, 5, (10,))], dim=1)
    cont = torch.randn(10, 1)
    expected = (
        z @ dec.weight.T
        + dec.bias
        + dec.batch_offset[batch[:, 0]]
        + dec.cat_offsets[0][cats[:, 0]]
        + dec.cat_offsets[1][cats[:, 1]]
        + cont @ dec.cont_slope
    )
    torch.testing.assert_close(dec(z, batch, cats, cont), expected)
    # one batch: its offset row acts as part of the bias
    single = LinearFeatureDecoder(3, 7, n_batch=1)
    with torch.no_grad():
        single.batch_offset.normal_()
    zeros = torch.zeros(10, 1, dtype=torch.long)
    torch.testing.assert_close(
        single(z, zeros), z @ single.weight.T + single.bias + single.batch_offset[0]
    )


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _is_mapped(n_bytes: int) -> bool:
    """Whether glibc serves a block of this size with its own memory map (chunk flag 0x2)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    pointer = libc.malloc(n_bytes)
    try:
        header = ctypes.c_size_t.from_address(pointer - ctypes.sizeof(ctypes.c_size_t)).value
        return bool(header & 0x2)
    finally:
        libc.free(pointer)


@pytest.mark.skipif(not GLIBC, reason="the allocator settings apply to glibc only")
def test_allocator_settings_are_restored_to_their_startup_values():
    assert restore_cpu_allocator() is False  # nothing to restore
    assert tune_cpu_allocator() is True
    assert tune_cpu_allocator() is True  # idempotent
    # a block larger than any glibc would keep in the heap by itself (its dynamic threshold
    # stops at 32 MiB) comes from the heap while tuned, and from a memory map once restored
    assert not _is_mapped(200 * 2**20)
    assert restore_cpu_allocator() is True
    assert _is_mapped(200 * 2**20)
    assert restore_cpu_allocator() is False
    release_free_memory()


def test_restore_sets_the_startup_thresholds(monkeypatch):
    from glassvi.train import _allocator

    calls = []

    class FakeLibc:
        def mallopt(self, option, value):
            calls.append((option, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(_allocator, "_libc", FakeLibc)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "4096")
    monkeypatch.setattr(_allocator, "_state", {"tuned": False})
    assert tune_cpu_allocator() is True
    calls.clear()
    assert restore_cpu_allocator() is True
    assert calls == [(-3, 128 * 1024), (-1, 4096), ("trim", 0)]


def test_startup_thresholds_read_the_environment():
    assert startup_thresholds({}) == {"mmap_threshold": 131072, "trim_threshold": 131072}
    env = {
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=999:glibc.malloc.arena_max=2",
    }
    assert startup_thresholds(env) == {"mmap_threshold": 65536, "trim_threshold": 999}


def test_allocator_is_left_alone_unless_asked(adata, monkeypatch):
    from glassvi.train import _allocator, _plan

    calls = []
    monkeypatch.setattr(_plan, "tune_cpu_allocator", lambda: calls.append("tune"))
    restore = _allocator.restore_cpu_allocator
    monkeypatch.setattr(_plan, "restore_cpu_allocator", lambda: calls.append("restore"))
    model = LinearVI(adata, n_latent=4)
    model.train(max_epochs=1, batch_size=64, **TRAIN_KW)
    assert "tune" not in calls
    calls.clear()
    model.train(max_epochs=1, batch_size=64, plan_kwargs={"tune_allocator": True}, **TRAIN_KW)
    assert calls == ["tune", "restore"]
    restore()


def test_encoder_stored_feature_major_is_optimised_as_plain_adam():
    """The fused update through the transposed alias equals PyTorch's plain Adam step."""
    mdata = glassvi.data.simulate(
        n_cells=120, n_genes=40, n_peaks=200, n_programs=3, modality="multiome", seed=3
    )
    states = []
    for creator in (None, lambda params: torch.optim.Adam(params, lr=1e-3, eps=0.01)):
        data = mdata.copy()
        LinearVI.setup_mudata(data)
        scvi.settings.seed = 0
        model = LinearVI(data, n_latent=4)
        weight = model.module.z_encoder.first_linear.weight
        assert weight.t().is_contiguous()
        initial = weight.detach().clone()
        plan = {"lazy_feature_rows": False}
        if creator is not None:
            plan = {"optimizer": "Custom", "optimizer_creator": creator}
        model.train(max_epochs=3, batch_size=40, plan_kwargs=plan, **TRAIN_KW)
        # hooks are removed after training; the weight keeps its layout
        assert not hasattr(weight, "_glassvi_alias_hooks") and weight.t().is_contiguous()
        assert (weight.detach() - initial).abs().max() > 1e-3
        states.append(model.module.state_dict())
    for name, value in states[0].items():
        torch.testing.assert_close(value, states[1][name], atol=1e-5, rtol=1e-4, msg=name)
