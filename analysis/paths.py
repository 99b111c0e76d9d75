"""Where the command lines may write, and whether they run from this project's own packages.

``python -m analysis ...`` puts the current folder first on ``sys.path``, so a folder there named
like one of the project's packages is imported in the package's place. With an editable install,
``fit --out analysis/law`` made ``./analysis/law/``, which then became the module ``analysis.law``:
``python -m analysis predict analysis/law`` failed with ``ImportError: cannot import name 'Law'``.
The command lines therefore refuse an output that would make such a folder (``check_output``), and
their entry points say in one line what happened when one is already there (``exit_if_shadowed``).

Imports nothing of the project, so that it still imports when the package itself is shadowed.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import all_suffixes
from pathlib import Path

PACKAGES = ("analysis", "evaluation", "modeling_l2l", "training")
"""The project's importable top-level packages."""
HOME = Path(__file__).resolve().parent.parent
"""The folder holding the real packages (the repository, or site-packages)."""


def shadowing_name(path: str | os.PathLike, *, folder: bool) -> tuple[str, str] | None:
    """The package that writing ``path`` (a folder if ``folder``, else a file) would shadow when
    Python runs from the current folder, and the name in that folder that would do it; or None.
    Only the current folder matters: it is the one that ``python -m`` puts first on
    ``sys.path``."""
    cwd = os.getcwd()
    # abspath, not resolve: the folder made would be named like the path, wherever links lead
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    relative = os.path.relpath(target, cwd)
    if relative == os.curdir or relative.startswith(os.pardir):
        return None
    parts = Path(relative).parts
    first = parts[0]
    for name in PACKAGES:
        if first in (name + suffix for suffix in all_suffixes()):
            return name, first  # a module file ./analysis.py shadows the package as well
        if first == name and (len(parts) > 1 or folder):
            here = Path(cwd, name)
            # Running from the repository itself: ./analysis is the package, nothing is shadowed.
            if here.exists() and here.resolve() == (HOME / name).resolve():
                return None
            return name, first
    return None


def check_output(path: str | os.PathLike, option: str, *, folder: bool) -> None:
    """ValueError when writing ``path`` (given as ``option``) would shadow a package of the
    project: a folder named like it in the current folder."""
    found = shadowing_name(path, folder=folder)
    if found is None:
        return
    name, first = found
    relative = os.path.relpath(os.path.abspath(os.path.expanduser(os.fspath(path))))
    raise ValueError(
        f"{option} {path}: that would make {Path(os.getcwd(), first)}, named like the package "
        f"{name!r}; Python run from this folder imports it instead of the package (python -m "
        f"{name} would no longer start here). Choose another name, e.g. results/{relative}"
    )


def check_out_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """ValueError when the output folder ``path`` is a file, or would shadow a package."""
    check_output(path, option, folder=True)
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{option} {path} is a file; the results are written into a folder")


def exit_if_shadowed(package: str = "analysis", code: int = 2) -> None:
    """Exit with a one-line error when ``package`` was not imported from this project, but from a
    folder of the current directory named like it (then nothing of it works: its submodules
    resolve to subfolders there, e.g. a saved law's folder)."""
    module = sys.modules.get(package)
    real = (HOME / package).resolve()
    if module is None:
        return
    file = getattr(module, "__file__", None)
    if file is not None and Path(file).resolve().parent == real:
        return
    found = [str(p) for p in getattr(module, "__path__", []) if Path(p).resolve() != real]
    where = found[0] if found else (file or "another folder")
    hint = " or run python -P -m ..." if sys.version_info >= (3, 11) else ""
    print(
        f"error: the folder {where} shadows the package {package!r} of this project ({real}): "
        f"Python run from {os.getcwd()} imports the current folder's {package}/ first. Rename "
        f"or move that folder (if it holds a saved law, pass its new path), run from another "
        f"folder{hint}",
        file=sys.stderr,
    )
    sys.exit(code)
