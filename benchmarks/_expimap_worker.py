"""Train expiMap (scArches) on an h5ad and save what the ProgramVI benchmark scores.

Runs in its own virtual environment (scArches does not install next to current anndata and
scvi-tools); ``benchmarks/programs.py`` calls it as
``$GLASSVI_EXPIMAP_PYTHON _expimap_worker.py IN.h5ad OUT.npz '{json options}'``.

The h5ad holds raw counts in ``X``, the mask in ``varm["I"]`` (genes x programs, 0/1) and the
batch in ``obs["batch"]``. Saved: ``latent`` (posterior means, cells x programs), ``weights``
(decoder, genes x programs, as used in the forward pass), ``epoch_s`` (wall seconds per epoch),
``peak_rss`` (bytes) and ``active`` (programs not removed by the group lasso).
"""

import json
import resource
import sys
import time

import anndata as ad
import numpy as np
import scarches as sca
import torch


def main(inp: str, out: str, options: str) -> None:
    opts = json.loads(options)
    torch.manual_seed(opts.get("seed", 0))
    adata = ad.read_h5ad(inp)
    soft = bool(opts.get("soft", False))
    model = sca.models.EXPIMAP(
        adata=adata,
        # expiMap's stratified sampler needs a condition key, even with a single batch
        condition_key="batch",
        hidden_layer_sizes=opts.get("hidden", [256, 256, 256]),
        recon_loss="nb",
        soft_mask=soft,
    )
    train_kw = {
        "n_epochs": opts["epochs"],
        "alpha_epoch_anneal": min(130, opts["epochs"]),
        "alpha": opts.get("alpha", 0.7),
        "alpha_kl": 0.5,
        "weight_decay": 0.0,
        "use_early_stopping": False,
        "seed": opts.get("seed", 0),
        "batch_size": opts.get("batch_size", 128),
    }
    if soft:
        train_kw["alpha_l1"] = opts.get("alpha_l1", 0.5)
    start = time.perf_counter()
    model.train(**train_kw)
    elapsed = time.perf_counter() - start
    latent = model.get_latent(mean=True)
    weight = model.model.decoder.L0.expr_L.weight.detach().cpu().numpy()
    if not soft:
        weight = weight * adata.varm["I"]
    np.savez(
        out,
        latent=np.asarray(latent, dtype=np.float32),
        weights=weight.astype(np.float32),
        epoch_s=np.array([elapsed / opts["epochs"]]),
        peak_rss=np.array([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]),
        active=np.asarray(model.nonzero_terms()),
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
