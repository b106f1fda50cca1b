"""The project's shared real data (`../shared/data` beside the checkout): the only thing any test
reads from outside the checkout.

`shared_data_path(name)` returns the path of one entry of that folder. When it is absent the
calling test is skipped with a reason naming the missing path, so a lone clone passes; with
`CKD_JAX_REQUIRE_SHARED_DATA=1` (what `.ci/run` sets) it fails instead, so CI cannot silently
lose those tests.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
REQUIRE_ENV = "CKD_JAX_REQUIRE_SHARED_DATA"


def shared_data_required() -> bool:
    value = os.environ.get(REQUIRE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{REQUIRE_ENV}={value!r}: expected 1 (required) or 0/unset (optional)")
    return value == "1"


def shared_data_path(name: str) -> str:
    """`<checkout>/../shared/data/<name>`; skips (or, when required, fails) the calling test if
    that path does not exist."""
    path = os.path.join(SHARED_DATA, name)
    if not os.path.exists(path):
        reason = f"shared data {path} is missing (the project's shared folder beside the checkout)"
        if shared_data_required():
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1 requires it", pytrace=False)
        pytest.skip(f"{reason}; set {REQUIRE_ENV}=1 to fail instead")
    return path
