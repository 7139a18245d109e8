"""The project's end-to-end harness: the installed one (streams/testing/pipeline.py,
what a team's tests get from the pytest plugin), with the workers started in the
checkout. The `pipeline` fixture (conftest.py) builds one on the plugin's
`kafka_bootstrap` and `partner_mocks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streams.testing import pipeline as installed
from streams.testing.pipeline import Pipeline, Worker, paths

REPO = Path(__file__).resolve().parent.parent

__all__ = ["REPO", "Pipeline", "Worker", "open_pipeline", "paths"]


async def open_pipeline(
    bootstrap: str, root: Path, mock_credentials: Mapping[str, str] | None = None, **kwargs: Any
) -> Pipeline:
    """Every destination's mock on a free port (demo credentials unless given), and a
    pipeline whose workers point at them and run in the checkout."""
    kwargs.setdefault("cwd", REPO)
    return await installed.open_pipeline(bootstrap, root, mock_credentials, **kwargs)
