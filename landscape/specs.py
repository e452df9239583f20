"""SPECs: a user's own code named on the command line, ``path/to/file.py:callable`` or
``package.module:callable``.

``landscape score W --model mymodel.py:make --data mydata.py:domains`` imports the user's
file (or module) **on purpose** and calls the named callable with no arguments: ``make()``
returns the ``nn.Module`` the weights belong to, ``domains()`` the ``{name: data}`` mapping
to analyse (see :mod:`landscape.domains`). A file is imported with
``importlib.util.spec_from_file_location`` (its folder on ``sys.path`` while it runs, so it
may import its neighbours), once per file and process. This is the user's code, run because
they asked for it; nothing is ever executed from a weights file. The module imports no
torch, so the command line checks a SPEC's syntax while it parses.

Every mistake in a SPEC raises one line naming the option, the SPEC and what to do:

>>> parse_spec("mymodel.py:make")
('mymodel.py', 'make')
>>> parse_spec("mymodel.py", what="--model")
Traceback (most recent call last):
...
ValueError: --model 'mymodel.py' is not a SPEC; write path/to/file.py:callable or \
package.module:callable, e.g. --model mymodel.py:make
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import keyword
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["call_spec", "import_spec", "load_data_spec", "load_model_spec", "parse_spec"]

#: examples used in the messages, per option
_EXAMPLES = {"--model": "mymodel.py:make", "--data": "mydata.py:domains"}
#: modules imported from files, by resolved path (a file named twice is run once)
_FILE_MODULES: dict[Path, ModuleType] = {}


def _example(what: str) -> str:
    return f"{what} {_EXAMPLES.get(what, 'file.py:function')}"


def _is_dotted_name(text: str) -> bool:
    parts = text.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def parse_spec(spec: str, what: str = "SPEC") -> tuple[str, str]:
    """Split a SPEC into ``(source, attribute)``: the file or module, and the callable's name
    (dotted attributes allowed: ``module:Class.create``).

    The split is at the last ``:``, so a Windows path ``C:\\x\\m.py:make`` works.

    Raises:
        ValueError: no ``:``, an empty side, or a callable name that is not a Python name.
    """
    if not isinstance(spec, str):
        raise TypeError(f"{what} must be a SPEC string, got {type(spec).__name__}")
    source, sep, attr = spec.rpartition(":")
    if not sep or not source or not attr or not _is_dotted_name(attr):
        raise ValueError(
            f"{what} {spec!r} is not a SPEC; write path/to/file.py:callable or "
            f"package.module:callable, e.g. {_example(what)}"
        )
    return source, attr


def _is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _import_file(source: str, what: str) -> ModuleType:
    path = Path(source).expanduser()
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"{what}: {source} {where}; give the Python file that defines the callable, "
            f"e.g. {_example(what)}"
        )
    path = path.resolve()
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"_landscape_user_{path.stem if path.stem.isidentifier() else 'file'}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{what}: cannot import {source}; it must be a Python file (.py)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        with _on_sys_path(path.parent):
            module_spec.loader.exec_module(module)
    except Exception as err:  # the user's code: one line naming the file and the error
        del sys.modules[name]
        raise ValueError(f"{what}: importing {source} raised {_one_line(err)}") from err
    _FILE_MODULES[path] = module
    return module


def _import_module(source: str, what: str) -> ModuleType:
    if not _is_dotted_name(source):
        raise ValueError(
            f"{what}: {source!r} is neither a Python file (.py) nor a module name; "
            f"e.g. {_example(what)} or {what} package.module:callable"
        )
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as err:
        if err.name and source.startswith(err.name):
            raise ValueError(
                f"{what}: no module named {source!r} (not found: {err.name!r}); install it, "
                "run from the folder above it, or give a file path path/to/file.py:callable"
            ) from None
        raise ValueError(f"{what}: importing {source} raised {_one_line(err)}") from err
    except Exception as err:
        raise ValueError(f"{what}: importing {source} raised {_one_line(err)}") from err


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _callables(module: ModuleType) -> list[str]:
    names = [
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and callable(v)
        and getattr(v, "__module__", None) == module.__name__
    ]
    return sorted(names)


def import_spec(spec: str, what: str = "SPEC") -> Callable[..., Any]:
    """The callable a SPEC names (imported, not called).

    Raises:
        ValueError: bad SPEC syntax, an unimportable module, an import that raised, a
            missing attribute.
        FileNotFoundError: the file does not exist.
        TypeError: the attribute is not callable.
    """
    source, attr = parse_spec(spec, what)
    if _is_file_source(source):
        module = _import_file(source, what)
    else:
        module = _import_module(source, what)
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            owner = source if i == 0 else f"{source}:{'.'.join(attr.split('.')[:i])}"
            defined = _callables(module) if i == 0 else []
            hint = f"; it defines {', '.join(defined)}" if defined else ""
            raise ValueError(f"{what}: {owner} has no {part!r}{hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(
            f"{what}: {spec} is not callable (it is a {type(obj).__name__}); name a "
            "function (or class) that takes no arguments"
        )
    return obj


def call_spec(spec: str, what: str = "SPEC") -> Any:
    """Import the callable a SPEC names and call it with no arguments.

    Raises:
        ValueError: as :func:`import_spec`, or the call raised (one line naming the SPEC).
    """
    func = import_spec(spec, what)
    try:
        inspect.signature(func).bind()
    except TypeError:
        raise TypeError(
            f"{what}: {spec} must be callable with no arguments; wrap it in a function "
            "without arguments"
        ) from None
    except ValueError:  # no signature (a builtin): just call it
        pass
    try:
        return func()
    except Exception as err:
        raise ValueError(f"{what}: {spec}() raised {_one_line(err)}") from err


def load_model_spec(spec: str, what: str = "--model") -> nn.Module:
    """The ``nn.Module`` returned by the SPEC's callable.

    Raises:
        TypeError: it returned something else (one line naming the type).
    """
    from torch import nn

    model = call_spec(spec, what)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what}: {spec}() returned a {type(model).__name__}, expected a torch.nn.Module "
            "(the network the weights belong to)"
        )
    return model


def load_data_spec(spec: str, what: str = "--data") -> Mapping:
    """The ``{name: data}`` mapping returned by the SPEC's callable (checked to be a mapping;
    each domain's data is checked by :func:`landscape.domains.check_domains` later).

    Raises:
        TypeError: it returned something else (one line naming the type).
        ValueError: it returned an empty mapping.
    """
    domains = call_spec(spec, what)
    if not isinstance(domains, Mapping):
        raise TypeError(
            f"{what}: {spec}() returned a {type(domains).__name__}, expected a mapping "
            "{domain name: data} with data a list of (X, y) batches or an unshuffled DataLoader"
        )
    if not domains:
        raise ValueError(f"{what}: {spec}() returned no domains; return {{name: data}}")
    return domains
