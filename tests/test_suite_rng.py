"""The suite's own rule (conftest ``_module_rng_per_test``): a module's ``RNG`` gives
every test the same data whatever ran before it in the worker."""

import zlib

import numpy as np

RNG = np.random.default_rng(1)


def _draw(n):  # a helper reading the module generator, as the test modules' helpers do
    return RNG.random(n)


def _fresh(request, n):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode())).random(n)


def test_module_rng_restarts_from_the_test_id(request):
    assert np.array_equal(_draw(4), _fresh(request, 4))
    RNG.random(1000)  # moves the shared generator on: the next test must not see it


def test_a_later_test_is_not_moved_by_an_earlier_one(request):
    assert np.array_equal(_draw(4), _fresh(request, 4))
