"""Switching a route of a routes file to another physical name: the one ``name:`` of that
route edited in the text (every other line, comment and layout kept), proved to load and
resolve with the project's own loader, and written atomically (a temporary file in the
same directory, then ``os.replace``), the old file kept beside as ``<file>.bak-<time>``."""

from __future__ import annotations

import difflib
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import ValidationError

from engines.settings import Settings
from routing.config import describe_validation_error, load_yaml
from routing.registry import check_routes
from spine.errors import EnginesError, RoutingError


class SwitchRefused(EnginesError):
    """The routes file could not be written (the new view is kept; switch by hand)."""


@dataclass(frozen=True)
class RouteChange:
    path: Path
    kind: str
    old_name: str
    new_name: str
    old_text: str
    new_text: str

    @property
    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.old_text.splitlines(keepends=True),
                self.new_text.splitlines(keepends=True),
                fromfile=str(self.path),
                tofile=str(self.path),
                n=1,
            )
        )

    @property
    def line(self) -> str:
        """The changed line, as it will read."""
        old = self.old_text.splitlines()
        new = self.new_text.splitlines()
        changed = [n for o, n in zip(old, new, strict=False) if o != n]
        return changed[0].strip() if changed else ""


def _scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as that string."""
    try:
        plain = yaml.safe_load(text)
    except yaml.YAMLError:
        plain = None
    return text if plain == text else "'" + text.replace("'", "''") + "'"


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    return None


def route_change(path: Path, kind: str, new_name: str) -> RouteChange:
    """The text of the routes file at ``path`` with ``kind``'s route named ``new_name``;
    :class:`RoutingError` if the file has no such route or the result does not load and
    resolve."""
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise RoutingError(f"routes file {path} is not valid YAML: {exc}") from exc
    routes = _child(root, "routes") if root is not None else None
    route = _child(routes, kind) if routes is not None else None
    name = _child(route, "name") if route is not None else None
    if not isinstance(name, yaml.ScalarNode):
        raise RoutingError(f"routes file {path} has no `name:` on a route of {kind}")
    start, end = name.start_mark.index, name.end_mark.index
    new_text = text[:start] + _scalar(new_name) + text[end:]
    try:
        settings = Settings.model_validate(load_yaml(path, new_text))
    except ValidationError as exc:
        raise RoutingError(describe_validation_error(path, exc)) from exc
    resolved = {r.kind: r for r in check_routes(settings)}
    if resolved[kind].route.name != new_name:
        raise RoutingError(f"routes file {path}: the edit did not rename {kind}'s route")
    return RouteChange(path, kind, str(name.value), new_name, text, new_text)


def apply_change(change: RouteChange, *, now: datetime | None = None) -> Path:
    """Write ``change`` atomically, the old file kept as ``<file>.bak-<time>``; return the
    backup's path. :class:`SwitchRefused` (nothing changed) if the file or its directory
    cannot be written, or the file changed since it was read."""
    path = change.path
    directory = path.parent
    stamp = f"{(now or datetime.now(UTC)):%Y%m%d%H%M%S}"
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():  # two switches in one second keep both old files
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    try:
        if path.read_text(encoding="utf-8") != change.old_text:
            raise SwitchRefused(f"{path} changed while the rebuild ran; nothing written")
        if not os.access(path, os.W_OK) or not os.access(directory, os.W_OK):
            raise PermissionError(f"{path} or its directory is not writable")
        shutil.copy2(path, backup)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(change.new_text)
                out.flush()
                os.fsync(out.fileno())
            shutil.copymode(path, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SwitchRefused(
            f"cannot write routes file {path} ({exc}): nothing switched. To switch by hand, "
            f"set `name: {change.new_name}` on the route {change.kind} (was "
            f"{change.old_name}), then restart the service"
        ) from exc
    return backup
