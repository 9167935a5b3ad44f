"""Plots of results already in the AnnData/MuData, and a self-contained HTML report.

Every function takes the data (or the model, for :func:`history`) and the keys that
``model.explain()`` and :mod:`glassvi.explain` wrote, returns matplotlib Axes and accepts
``show=`` and ``save=`` like scanpy's plotting functions.

- :func:`activity`: program or factor activities on a UMAP (or any embedding).
- :func:`top_features`: top genes or peaks of a program, gene-set members marked.
- :func:`attribution_heatmap`: features x groups attributions as a heatmap or dotplot.
- :func:`differential`: differential programs, effect size against log Bayes factor.
- :func:`history`: training curves.
- :func:`multiome_program`: a program's gene weights beside its linked peaks' weights.
- :func:`write_report`: all of the above as PNG files and one offline ``report.html``.
"""

from ._differential import differential, differential_table
from ._embedding import activity
from ._features import top_features
from ._heatmap import attribution_heatmap
from ._history import history, history_frame
from ._multiome import multiome_program
from ._report import write_report

__all__ = [
    "activity",
    "attribution_heatmap",
    "differential",
    "differential_table",
    "history",
    "history_frame",
    "multiome_program",
    "top_features",
    "write_report",
]
