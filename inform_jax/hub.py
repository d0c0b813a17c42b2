"""Hugging Face Hub names wherever a local path is taken (models, reward models, tokenizers, data files).

A name is ``org/name[@revision][/path/in/repo]``, the form of ``hf://`` paths: the repository id (always with its
namespace, so a mistyped local folder such as ``final`` is never looked up on the Hub), an optional revision (a
branch, tag or commit hash, without ``/``) and an optional path inside the repository (a model subfolder, or a data
file). An existing local path always wins and is returned unchanged.

The repository is fetched with ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_TOKEN``, and the local snapshot folder it returns is then read by the
project's own readers exactly like any local folder (so their checks hold: e.g. a sharded index may name the
cache's own ``blobs/``, nothing else outside the folder).

Data files (:func:`resolve_data_file`): ``org/name/path/in/repo.jsonl`` names the file; ``org/name`` alone is the
dataset repository's single data file (``.jsonl``, ``.json``, ``.parquet``, optionally gzipped JSON), anywhere in it;
a repository with several must be given the file's path.
"""

from __future__ import annotations

import dataclasses
import os
import re

# Data file suffixes the preference readers understand (inform_jax.data.preference reads them by suffix).
DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet", ".pq")

_NAME = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<revision>[^/@]+))?(?:/(?P<path>.+))?$")


class HubNameError(FileNotFoundError):
    """A name is neither an existing local path nor a Hub id that resolves (not in the cache when offline)."""


@dataclasses.dataclass(frozen=True)
class HubName:
    """A parsed Hub name: ``repo_id``, ``revision`` (None: the default branch), ``path`` inside the repo (or None)."""

    repo_id: str
    revision: str | None = None
    path: str | None = None


def parse_hub_name(name: str) -> HubName | None:
    """The parts of ``org/name[@revision][/path]``, or None when ``name`` cannot be a Hub name (an absolute or
    ``./`` path, no namespace, characters a repo id cannot hold, a ``..`` in the path inside the repo)."""
    match = _NAME.match(name)
    if match is None or name.startswith((".", "~")):
        return None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(match["repo"])
    except HFValidationError:
        return None
    path = match["path"]
    if path is not None and (".." in path.split("/") or path.startswith("/") or "" in path.rstrip("/").split("/")):
        return None  # the path inside the repo must stay inside the snapshot folder
    return HubName(match["repo"], match["revision"], path.rstrip("/") if path else None)


def _snapshot(hub: HubName, name: str, repo_type: str, what: str, allow_patterns=None) -> str:
    """The local snapshot folder of ``hub`` (downloaded unless offline), or a HubNameError saying why not."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(hub.repo_id, revision=hub.revision, repo_type=repo_type, allow_patterns=allow_patterns)
    except (OSError, ValueError) as err:  # LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, ...
        where = f"{repo_type} {hub.repo_id!r}" + (f" at revision {hub.revision!r}" if hub.revision else "")
        hint = ""
        if constants.HF_HUB_OFFLINE:
            hint = f"; HF_HUB_OFFLINE is set and it is not in the Hub cache {constants.HF_HUB_CACHE}"
        raise HubNameError(
            f"{what} {name!r}: no such local path, and the Hugging Face Hub {where} cannot be resolved{hint} "
            f"({type(err).__name__}: {err})"
        ) from err


def _parse_or_raise(name: str, what: str) -> HubName:
    hub = parse_hub_name(name)
    if hub is None:
        raise HubNameError(
            f"{what} {name!r}: neither an existing local path nor a Hugging Face Hub id (org/name[@revision][/path])"
        )
    return hub


def resolve_path(name_or_path: str | os.PathLike, *, repo_type: str = "model", what: str = "path") -> str:
    """A local path for ``name_or_path``: itself when it exists, else the Hub repository's snapshot folder (or the
    path inside it). ``what`` names the argument in errors (e.g. ``"model.path"``).

    Raises HubNameError when the name is neither a local path nor a Hub id, or the id cannot be resolved (offline:
    not in the cache), or the path inside the repository is not in the snapshot."""
    name = os.fspath(name_or_path)
    if os.path.exists(name):
        return name
    hub = _parse_or_raise(name, what)
    only = [hub.path, f"{hub.path}/*"] if hub.path else None  # online: fetch just that file or subfolder
    folder = _snapshot(hub, name, repo_type, what, allow_patterns=only)
    if hub.path is None:
        return folder
    inside = os.path.join(folder, *hub.path.split("/"))
    if not os.path.exists(inside):
        raise HubNameError(f"{what} {name!r}: the {repo_type} {hub.repo_id!r} has no {hub.path!r}")
    return inside


def resolve_data_file(name_or_path: str | os.PathLike, *, what: str = "data file") -> str:
    """A local data file for ``name_or_path``: itself when it exists, else a file of a Hub dataset repository
    (``org/name/path/in/repo.jsonl``, or ``org/name`` holding a single data file; module docstring)."""
    name = os.fspath(name_or_path)
    if os.path.exists(name):
        return name
    hub = _parse_or_raise(name, what)
    if hub.path is not None:
        return resolve_path(name, repo_type="dataset", what=what)
    folder = _snapshot(hub, name, "dataset", what)
    found = sorted(
        os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
        for root, _, files in os.walk(folder, followlinks=True)
        for f in files
        if f.lower().endswith(DATA_SUFFIXES)
    )
    if len(found) != 1:
        held = f"several: {found[:10]}" if found else f"none (suffixes {', '.join(DATA_SUFFIXES)})"
        raise HubNameError(
            f"{what} {name!r}: a dataset repo given without a file must hold exactly one data file, it holds {held}; "
            f"name the file: {hub.repo_id}/<path/in/repo>"
        )
    return os.path.join(folder, *found[0].split("/"))
