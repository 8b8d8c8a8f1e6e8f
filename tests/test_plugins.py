"""The registry every kind of adapter goes through: names, lazy imports, entry points.

Plugins here are real: a module and a distribution's ``entry_points.txt`` written to a
folder on ``sys.path``, found by ``importlib.metadata`` as an installed package is."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path

import pytest

from modelplane.engines import registry as engines
from modelplane.plugins import Registry
from modelplane.providers import registry as providers


class Thing:
    def __init__(self, label: str = "built-in") -> None:
        self.label = label


def only_things(obj: object) -> Thing:
    thing = obj() if isinstance(obj, type) else obj
    if not isinstance(thing, Thing):
        raise TypeError(f"{obj!r} is not a thing")
    return thing


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, Path]:
    """A plugin module and a distribution declaring it, in a folder on ``sys.path``;
    the names are fresh for each test (the group too, so no other test sees them)."""
    module, group = f"plugin_{uuid.uuid4().hex[:8]}", f"modelplane.test_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from tests.test_plugins import Thing\n"
        "\n"
        "class Good(Thing):\n"
        "    def __init__(self):\n"
        "        super().__init__('from a plugin')\n"
        "\n"
        "class Wrong:\n"
        "    pass\n"
    )
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{group}]\ngood = {module}:Good\nwrong = {module}:Wrong\n"
        f"taken = {module}:Good\nmissing = {module}:Nowhere\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return module, group, tmp_path


def test_entry_points_are_read_and_loaded_only_when_used(plugin: tuple[str, str, Path]) -> None:
    module, group, _ = plugin
    reg = Registry("thing", group=group, check=only_things)
    assert reg.names() == ["good", "missing", "taken", "wrong"]
    assert module not in sys.modules, "listing names imports no plugin"
    assert reg.get("good").label == "from a plugin"
    assert module in sys.modules
    assert reg.get("good") is reg.get("good"), "a class is made once and shared"


def test_a_registered_path_is_imported_on_first_use(plugin: tuple[str, str, Path]) -> None:
    module, _, _ = plugin
    reg = Registry("thing", group="modelplane.test_nothing", check=only_things)
    reg.register("lazy", f"{module}:Good")
    assert "lazy" in reg and module not in sys.modules
    assert [name for name, _ in reg.loaded()] == []
    assert reg.get("lazy").label == "from a plugin"
    assert [name for name, _ in reg.loaded()] == ["lazy"]


def test_a_built_in_keeps_its_name(
    plugin: tuple[str, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    module, group, _ = plugin
    reg = Registry("thing", group=group, check=only_things)
    reg.register("taken", Thing())
    with caplog.at_level(logging.WARNING, logger="modelplane.plugins"):
        assert reg.get("taken").label == "built-in"
        assert "good" in reg
    assert f"ignoring the thing 'taken' of entry point {module}:Good" in caplog.text


def test_unknown_names_list_the_known_ones(plugin: tuple[str, str, Path]) -> None:
    _, group, _ = plugin
    reg = Registry("thing", group=group, check=only_things)
    reg.register("built", Thing())
    with pytest.raises(KeyError, match="unknown thing 'nope'; known things: built, good, missing"):
        reg.get("nope")


def test_a_plugin_of_the_wrong_type_fails_naming_it(plugin: tuple[str, str, Path]) -> None:
    module, group, _ = plugin
    reg = Registry("thing", group=group, check=only_things)
    with pytest.raises(TypeError) as err:
        reg.get("wrong")
    message = str(err.value)
    assert f"the thing 'wrong' (entry point {module}:Wrong) is unusable" in message
    assert "is not a thing" in message
    with pytest.raises(LookupError, match=f"the thing 'missing' .*{module}:Nowhere.* cannot load"):
        reg.get("missing")


def test_the_built_in_adapters_register_through_the_same_registry() -> None:
    assert {"openai", "ollama", "anthropic", "bedrock", "vertex"} <= set(providers.names())
    assert "llamacpp" in engines.names()


def test_a_provider_missing_its_methods_is_refused_by_name() -> None:
    reg = Registry("provider", group="modelplane.test_nothing", check=providers._instance)
    reg.register("half", "tests.test_plugins:Thing")  # checked when loaded, as plugins are
    with pytest.raises(
        TypeError, match=r"the provider 'half' .*is not a provider \(it has no name, .*send\(\)"
    ):
        reg.get("half")
