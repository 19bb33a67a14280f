"""Plug-in resolution (fishermask/plugins.py) on real modules and a real installed distribution's
metadata: built-ins, import paths (installed or next to the config), entry points, and every
failure named with the key, the path and what is wrong."""

from __future__ import annotations

import sys
import textwrap

import pytest

from fishermask import plugins
from fishermask.config import from_dict, get_strategy_spec
from fishermask.plugins import PluginError, available, local_modules, resolve, search_folders
from tests.helpers import copy_example, install_example

BUILTINS = {"margin": object}


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    """``tmp_path`` on sys.path (as an installed site would be), cleaned up after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("fishermask_example", "myplug"))]:
        del sys.modules[name]


def _module(folder, name, code):
    (folder / f"{name}.py").write_text(textwrap.dedent(code))


def test_builtin_and_import_path(on_path):
    assert resolve("strategies", "margin", "strategy.name", BUILTINS).source == "builtin"
    _module(on_path, "myplug", "class Outer:\n    class Inner:\n        pass\nvalue = 3\n")
    p = resolve("models", "myplug:Outer.Inner", "model.name", {})
    assert p.obj.__qualname__ == "Outer.Inner" and p.source == "import path"
    assert p.path == "myplug:Outer.Inner" and p.distribution is None


@pytest.mark.parametrize("name,text", [
    ("myplug:Nope", "model.name: 'myplug:Nope': module 'myplug' has no attribute 'Nope'"),
    ("myplug:valu", "did you mean value?"),
    ("nomod.sub:X", "no module named 'nomod'"),
    ("broken:X", "importing module 'broken' for 'broken:X' failed: ZeroDivisionError"),
    ("needs:X", "importing 'needs:X' failed inside module 'needs'"),
    ("my plug:X", "is not an import path; write package.module:attribute"),
    ("nothing_like_this", "unknown model 'nothing_like_this'; valid models: margin"),
    ("", "give a model name"),
])
def test_failures_name_the_key_the_path_and_what_is_wrong(on_path, name, text):
    _module(on_path, "myplug", "value = 3\n")
    _module(on_path, "broken", "1 / 0\n")
    _module(on_path, "needs", "import a_missing_dependency\n")
    with pytest.raises(PluginError) as err:
        resolve("models", name, "model.name", BUILTINS)
    assert text in str(err.value)


def test_a_module_next_to_the_config_file_is_found(tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    _module(folder, "myplug_next", "VALUE = 7\n")
    with pytest.raises(PluginError, match="no module named 'myplug_next'"):
        resolve("models", "myplug_next:VALUE", "model.name", {})
    search_folders(folder)
    try:
        assert resolve("models", "myplug_next:VALUE", "model.name", {}).obj == 7
        assert local_modules(["myplug_next:VALUE"]) == [str(folder / "myplug_next.py")]
    finally:
        search_folders()
        sys.path.remove(str(folder))
        del sys.modules["myplug_next"]


def test_entry_points_of_an_installed_distribution(on_path):
    install_example(on_path)
    p = resolve("strategies", "balanced_margin", "strategy.name", BUILTINS)
    assert p.source == "entry point" and p.path == "fishermask_example.strategies:BalancedMargin"
    assert (p.distribution, p.version) == ("fishermask-example", "0.1.0")
    assert p.provenance == "fishermask_example.strategies:BalancedMargin (fishermask-example 0.1.0)"
    names = dict(available("models", {}))
    assert "entry point of fishermask-example 0.1.0" in names["shape_net"]
    # an installed package's modules need no py_modules on Ray workers
    assert local_modules(["fishermask_example.nets:ShapeNet"]) == []


def test_a_strategy_plugin_must_be_a_strategy_with_params(on_path):
    copy_example(on_path)
    spec = get_strategy_spec("fishermask_example.strategies:BalancedMargin")
    assert spec.params.model_fields["temperature"].default == 1.0
    with pytest.raises(PluginError, match="is a ModelMetaclass, not a subclass of "
                                          "fishermask.strategies.Strategy"):
        get_strategy_spec("fishermask_example.strategies:BalancedMarginParams")
    with pytest.raises(PluginError, match="'fishermask_example.nets:ShapeNet' is a type, not"):
        get_strategy_spec("fishermask_example.nets:ShapeNet")


def test_config_checks_every_target_and_its_arguments(on_path):
    copy_example(on_path)
    base = {"data": {"dataset": "fishermask_example.data:shapes", "args": {"n_train": 50}},
            "model": {"name": "fishermask_example.nets:ShapeNet", "args": {"width": 4}},
            "strategy": {"name": "fishermask_example.strategies:BalancedMargin",
                         "temperature": 2.0}}
    cfg = from_dict(base)
    assert cfg.strategy.params == {"temperature": 2.0} and cfg.model.args == {"width": 4}
    for change, text in (
            ({"data": {"dataset": "fishermask_example.data:shapes", "args": {"nope": 1}}},
             "data.args: the dataset factory fishermask_example.data:shapes cannot be called"),
            ({"model": {"name": "fishermask_example.nets:ShapeNet", "args": {"depth": 3}}},
             "model.args: the network fishermask_example.nets:ShapeNet cannot be called"),
            ({"model": {"name": "cnn_small", "args": {"width": 3}}},
             "model.args is for plug-in networks"),
            ({"data": {"dataset": "digits", "args": {"n": 3}}}, "data.args is for dataset factories"),
            ({"data": {"dataset": "fishermask_example.data:CLASSES"}},
             "is a tuple, not a callable dataset factory"),
            ({"strategy": {"name": "fishermask_example.strategies:BalancedMargin",
                           "temperature": -1}}, "temperature"),
    ):
        with pytest.raises(Exception) as err:
            from_dict({**base, **change})
        assert text in str(err.value), err.value


def test_an_unknown_name_lists_the_installed_ones(on_path):
    install_example(on_path)
    with pytest.raises(PluginError) as err:
        resolve("strategies", "balanced", "strategy.name", {"margin": object})
    assert "valid strategies: margin, balanced_margin" in str(err.value)
    assert plugins.is_import_path("a.b:C.d") and not plugins.is_import_path("a:b:c")
