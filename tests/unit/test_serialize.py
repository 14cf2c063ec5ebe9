"""Pickling on slots: the fast pickle first, and load errors that say the way out (pure)."""

from __future__ import annotations

import pickle

import pytest

from adrizzle.plan.serialize import dumps, load_error

pytestmark = pytest.mark.timeout(30)


def test_values_take_the_standard_pickle_and_lambdas_cloudpickle() -> None:
    assert pickle.loads(dumps([1, "a"])) == [1, "a"]
    assert pickle.loads(dumps(lambda x: x + 1))(1) == 2


def test_a_missing_module_names_the_ways_to_ship_it() -> None:
    reason = load_error(ModuleNotFoundError("No module named 'helpers'"))
    assert reason.startswith("ModuleNotFoundError: No module named 'helpers'")
    assert "engine.add_module(...)" in reason
    assert "py_files" in reason
    assert load_error(ValueError("bad data")) == "ValueError: bad data"
