"""Planning a seed ensemble: which members exist and the exact config each one trains with.

An ensemble is K copies of one config that differ only in what the members are meant to
disagree on: the initialisation / augmentation seed (``training.seed``) and, with
``vary_labels``, the labeled frames (``data.split_seed``). Everything else is identical, so the
members' disagreement measures model uncertainty, which is what EKS weighs.

Paths in the member configs are made absolute here, in the driver, because Ray workers (on this
machine or another node) do not share the driver's working directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from lpray.config import Config, config_from_dict
from lpray.io.storage import is_local, join, local_path

MEMBER_PREFIX = "member-"


@dataclass(frozen=True)
class MemberSpec:
    """One ensemble member.

    Attributes:
        index: position in the ensemble (0..K-1); the member folder is ``member-<index>``.
        seed: its ``training.seed``.
        split_seed: its ``data.split_seed`` (differs between members only with vary_labels).
        model_dir: its model directory (an absolute path, or a URL when the ensemble folder
            is on an object store).
    """

    index: int
    seed: int
    split_seed: int
    model_dir: Path | str

    @property
    def name(self) -> str:
        return f"{MEMBER_PREFIX}{self.index}"


def _absolute(path: str) -> str:
    return path if not is_local(path) else str(local_path(path).expanduser().resolve())


def absolute_paths(cfg: Config) -> Config:
    """A copy of ``cfg`` whose local paths are absolute, so any worker reads the same files."""
    values = cfg.to_dict()
    data = values["data"]
    if data["root"] != "synthetic":
        data["root"] = _absolute(data["root"])
    data["synthetic_dir"] = _absolute(data["synthetic_dir"])
    if data["split_file"]:
        data["split_file"] = _absolute(data["split_file"])
    values["training"]["output_dir"] = _absolute(values["training"]["output_dir"])
    return config_from_dict(values)


def plan_members(
    cfg: Config, n_members: int, out_dir: str | Path, vary_labels: bool = False
) -> list[MemberSpec]:
    """The members of a K-seed ensemble of ``cfg``.

    Member k trains with ``training.seed = cfg.training.seed + k``. With ``vary_labels`` it also
    uses ``data.split_seed = cfg.data.split_seed + k``: a different shuffle of the labeled frames
    into train/val/test (and so, with ``data.train_frames``, a different labeled subset), the way
    bagging varies the data each member sees. Without it every member sees the same frames.

    Raises:
        ValueError: fewer than one member.
    """
    if n_members < 1:
        raise ValueError(f"--seeds: an ensemble needs at least one member, got {n_members}")
    return [
        MemberSpec(
            index=k,
            seed=cfg.training.seed + k,
            split_seed=cfg.data.split_seed + (k if vary_labels else 0),
            model_dir=member_dir(out_dir, f"{MEMBER_PREFIX}{k}"),
        )
        for k in range(n_members)
    ]


def ensemble_root(out_dir: str | Path) -> Path | str:
    """The ensemble folder: an absolute local path, or the URL without a trailing ``/``."""
    if is_local(out_dir):
        return local_path(out_dir).expanduser().resolve()
    return str(out_dir).rstrip("/")


def member_dir(out_dir: str | Path, name: str) -> Path | str:
    root = ensemble_root(out_dir)
    return root / name if isinstance(root, Path) else join(root, name)


def member_config(cfg: Config, member: MemberSpec) -> Config:
    """The config member ``member`` trains with (absolute paths, its seeds, its folder).

    Progress bars are switched off: K members writing bars into one log are unreadable.
    """
    values = absolute_paths(cfg).to_dict()
    values["training"].update(
        seed=member.seed, output_dir=str(member.model_dir), progress_bar=False
    )
    values["data"]["split_seed"] = member.split_seed
    return config_from_dict(values)


def same_config(a: Config, b: Config) -> bool:
    """True when two configs describe the same training run (progress display aside)."""
    left, right = dataclasses.asdict(a), dataclasses.asdict(b)
    for values in (left, right):
        values["training"].pop("progress_bar")
    return left == right
