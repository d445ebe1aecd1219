import pytest

from support.openapi import SpecValidator


@pytest.fixture(scope="session")
def spec() -> SpecValidator:
    return SpecValidator()
