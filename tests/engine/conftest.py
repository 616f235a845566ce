import pytest

from .helpers import IMPLEMENTATIONS, implementation


@pytest.fixture(scope='session', params=IMPLEMENTATIONS)
def engine(request):
    """Each implementation of the engine in turn: the pure reference module, then its compiled build."""
    return implementation(request.param)
