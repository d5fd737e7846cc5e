"""Dataset name -> reader. Readers register themselves with :func:`register`."""

from __future__ import annotations

from typing import Callable, Optional

from qgnn.errors import DataError

_READERS: dict[str, Callable] = {}


def register(*names: str):
    """Decorator: ``@register("cora", "citeseer")`` on ``reader(name, root, **options)``."""

    def wrap(reader: Callable) -> Callable:
        for name in names:
            _READERS[name] = reader
        return reader

    return wrap


def dataset_names() -> list[str]:
    return sorted(_READERS)


def load_dataset(name: str, root: Optional[str] = None, **options):
    """Read dataset ``name`` from the data root (see :func:`qgnn.data.resolve_data_root`)."""
    key = name.lower().replace("-", "_")
    if key not in _READERS:
        raise DataError(
            f"Unknown dataset {name!r}. Known datasets: {', '.join(dataset_names())}."
        )
    return _READERS[key](key, root, **options)
