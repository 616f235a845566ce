"""Where the production stack (Redis) and the embedded default differ, one object per difference: a
setting names its class by dotted path, chosen once in settings.py, and the object is made on first use
and kept by the process. Every other module calls these objects and never asks which stack it is on.
"""

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

_chosen: dict[str, object] = {}


def chosen(setting: str):
    """The object of the class ``settings.<setting>`` names, made once."""
    backend = _chosen.get(setting)
    if backend is None:
        backend = _chosen[setting] = import_string(getattr(settings, setting))()
    return backend


def forget_changed_backend(setting, **kwargs) -> None:
    """A test that overrides the setting gets the class it names, and the old one back afterwards."""
    _chosen.pop(setting, None)


setting_changed.connect(forget_changed_backend)
