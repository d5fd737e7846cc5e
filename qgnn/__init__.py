"""qgnn: low-bit quantization-aware training of graph neural networks with LoRAP prompts."""

__version__ = "0.1.0"

from qgnn.errors import CheckpointError, ConfigError, DataError, GraphError, QgnnError
from qgnn.graph import Graph

__all__ = [
    "__version__",
    "Graph",
    "QgnnError",
    "ConfigError",
    "DataError",
    "GraphError",
    "CheckpointError",
]
