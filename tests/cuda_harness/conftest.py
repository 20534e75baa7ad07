"""The harness's tests run in a Python process with the ASan runtime preloaded (the extension
is built with AddressSanitizer): `bash .ci/cuda_harness.sh`, or see README.md. In any other
process they are collected and skipped, with that reason."""
from pathlib import Path

import pytest

from tests.cuda_harness import build

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if build.asan_preloaded():
        return
    skip = pytest.mark.skip(reason="CUDA harness: needs the ASan runtime preloaded; run "
                                   "`bash .ci/cuda_harness.sh` (tests/cuda_harness/README.md)")
    for item in items:
        if _HERE in Path(item.fspath).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sim():
    """The harness extension module (built on first use)."""
    return build.build()
