"""Tell, without importing anything, whether a worker source (a package or module name) can be found at all.

`run` asks before it creates its database and journal, so that a mistaken `--workers` (or a service started in
a directory without the package) fails with one line and leaves no files behind. The spawner stays the judge of
everything else: this only answers "certainly missing" for a top-level name that no finder knows.

Why not `importlib.util.find_spec`: for a dotted name it imports the parent packages, and the supervisor must
never run worker code. A top-level name needs no parent, so each finder of the import system is asked for that
name alone, as the import statement itself would ask before running any of the package's code: the path finder
over the spawner's search path (its working directory first, then this interpreter's path, which it shares), and
the other finders on `sys.meta_path` (an editable install's, for one), which map names to files without
importing them. Anything uncertain (a finder that raises) counts as found: this check may let a mistake through
to the spawner, which reports it as before, but must never refuse a source the spawner could import.
"""
from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder


def missing_source(sources: list[str]) -> str | None:
    """Return the first source whose top-level package or module no finder knows (None: all may be found)."""
    try:
        search_path = [os.getcwd(), *sys.path]  # the spawner runs as `python -m` in our cwd: its sys.path[0]
    except OSError:  # the working directory was removed: the spawner cannot look there either
        search_path = list(sys.path)
    for source in sources:
        top = source.partition(".")[0]
        if not _findable(top, search_path):
            return source
    return None


def _findable(name: str, search_path: list[str]) -> bool:
    if name in sys.modules:
        return True  # already imported here (the standard library, our own package): certainly found
    for finder in sys.meta_path:
        try:
            if finder is PathFinder or isinstance(finder, type) and issubclass(finder, PathFinder):
                spec = PathFinder.find_spec(name, search_path)
            else:
                find_spec = getattr(finder, "find_spec", None)
                if find_spec is None:
                    return True  # a legacy finder we cannot ask without loading: leave it to the spawner
                spec = find_spec(name, None)
        except Exception:  # a finder's own failure proves nothing about the name
            return True
        if spec is not None:
            return True
    return False
