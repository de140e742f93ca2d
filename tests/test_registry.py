import sys
import types

import pytest

from bench import BenchError
from bench.registry import METHODS, METRICS, SUITES, Registry


def test_lookup_is_lazy():
    reg = Registry("thing")
    reg.add("never-imported", "package_that_does_not_exist.module:Thing", "a lazily imported thing")
    assert "never-imported" in reg            # registering imports nothing
    with pytest.raises(BenchError, match="package_that_does_not_exist"):
        reg.get("never-imported").load()


def test_did_you_mean_on_misspelt_names():
    with pytest.raises(BenchError) as err:
        METHODS.get("ezigne")
    assert "did you mean 'ezigen'" in str(err.value)
    with pytest.raises(BenchError, match="did you mean 'dreambench'"):
        SUITES.get("dreambnch")
    with pytest.raises(BenchError, match="unknown metric 'zzz'") as err:
        METRICS.get("zzz")
    assert "did you mean" not in str(err.value)


def test_variants_are_registrations_of_one_class_with_parameters():
    targets = {METHODS.get(n).target for n in METHODS.names() if n.startswith("ezigen")}
    assert targets == {"methods.ezigen:EZIGenMethod"}
    assert METHODS.get("ezigen-ref-t300").params == {"reference_timestep": 300, "schedule": "allstep", "iterative": False}
    assert METHODS.get("ezigen-allstep").params == {"schedule": "allstep", "iterative": False}
    for name in ("ezigen", "ezigen-allstep", "ezigen-decoupled", "ezigen-ref-t100", "ezigen-ref-t300",
                 "ezigen-ref-t500", "ezigen-ref-t800", "ezigen-ref-adaptive", "sd"):
        assert name in METHODS


def test_duplicate_registration_is_refused():
    reg = Registry("thing")
    reg.add("a", "x:y", "first")
    with pytest.raises(ValueError):
        reg.add("a", "x:z", "second")


def test_entry_point_plugins(monkeypatch):
    module = types.ModuleType("fake_plugin_module")
    module.PluginMethod = type("PluginMethod", (), {"tasks": frozenset({"generate"})})
    monkeypatch.setitem(sys.modules, "fake_plugin_module", module)

    class FakeEntryPoint:
        name, value = "my-plugin", "fake_plugin_module:PluginMethod"

    import bench.registry as registry_module
    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: [FakeEntryPoint()] if group == "bench.methods" else [])
    reg = Registry("method", entry_point_group="bench.methods")
    reg.add("builtin", "x:y", "built in")
    assert reg.names() == ["builtin", "my-plugin"]
    assert reg.get("my-plugin").load() is module.PluginMethod
