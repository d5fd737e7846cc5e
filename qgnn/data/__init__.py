"""Dataset readers (one module per raw format) behind one registry."""

from qgnn.data.base import (
    GraphDataset,
    GraphSample,
    NodeDataset,
    collate,
    resolve_data_root,
)
from qgnn.data.registry import dataset_names, load_dataset, register

# Importing a reader module registers its datasets.
from qgnn.data import planetoid  # noqa: F401,E402
from qgnn.data import reddit  # noqa: F401,E402
from qgnn.data import zinc  # noqa: F401,E402
from qgnn.data import superpixels  # noqa: F401,E402
from qgnn.data import ogb  # noqa: F401,E402

__all__ = [
    "GraphDataset",
    "GraphSample",
    "NodeDataset",
    "collate",
    "resolve_data_root",
    "dataset_names",
    "load_dataset",
    "register",
]
