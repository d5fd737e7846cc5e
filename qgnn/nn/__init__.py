"""Quantizable GNN layers and task models."""

from qgnn.nn.conv import QGATConv, QGCNConv, QGINConv, QuantizableConv
from qgnn.nn.models import ARCHS, GraphPredictor, NodeClassifier, make_conv

__all__ = [
    "QuantizableConv",
    "QGCNConv",
    "QGINConv",
    "QGATConv",
    "NodeClassifier",
    "GraphPredictor",
    "make_conv",
    "ARCHS",
]
