"""Dataset name -> reader. Readers register themselves with :func:`register`."""

from __future__ import annotations

import inspect
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
    reader = _READERS[key]
    # Pass each reader only the options it takes (a config carries options for all readers).
    accepted = inspect.signature(reader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    return reader(key, root, **options)
