"""The package's public names stay what they are after every submodule has been imported (a subpackage named like
an API function would replace it: ``import streammine.x`` sets the attribute ``streammine.x``)."""
import importlib
import pkgutil

import streammine


def test_public_api_survives_importing_every_submodule():
    for info in pkgutil.walk_packages(streammine.__path__, "streammine."):
        importlib.import_module(info.name)
    assert callable(streammine.mine) and not hasattr(streammine.mine, "__path__")
    assert callable(streammine.load_config)
    for name in streammine.__all__:
        assert getattr(streammine, name) is not None
