"""Learned models on the gateway: persist per asset, load at start, swap atomically, roll back.

Layout under the engine's state directory::

    <state_dir>/models/<asset>/current.npz  current.json     the model in use
    <state_dir>/models/<asset>/previous.npz previous.json    the one before (for rollback)

A new model is written as ``next.*`` first (atomically, hash in its manifest), then
``current`` becomes ``previous`` and ``next`` becomes ``current`` by ``os.replace``. A power cut
at any point leaves at least one loadable model: :meth:`ModelStore.load` tries ``current``,
and if it is missing or refused (hash mismatch after a torn swap), ``previous``. So a restarted
engine monitors at once instead of relearning.
"""

from __future__ import annotations

__all__ = ["ModelStore", "restore_models", "save_learned"]

import logging
import os
from pathlib import Path

from machinewatch.engine.errors import ModelError
from machinewatch.engine.scoring import LearnedModel
from machinewatch.models.store import load_model, save_model

log = logging.getLogger(__name__)
_SLOTS = ("current", "previous")


class ModelStore:
    """The learned models of every asset, under ``<state_dir>/models``."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.root = Path(state_dir) / "models"

    def asset_dir(self, asset: str) -> Path:
        """Folder of one asset's models."""
        return self.root / asset

    def save(self, asset: str, learned: LearnedModel) -> Path:
        """Persist ``learned`` as the asset's current model; the old current becomes previous."""
        d = self.asset_dir(asset)
        try:
            save_model(d / "next", learned.model, learned.threshold, asset=asset, **dict(learned.info))
        except OSError:
            for ext in (".npz", ".json"):  # a full disk: current and previous stay as they were
                (d / f"next{ext}").unlink(missing_ok=True)
            raise
        if (d / "current.json").exists():
            for ext in (".npz", ".json"):
                os.replace(d / f"current{ext}", d / f"previous{ext}")
        for ext in (".npz", ".json"):  # npz first: a torn swap fails the hash check, not silently
            os.replace(d / f"next{ext}", d / f"current{ext}")
        _fsync_dir(d)
        log.info("asset %s: model saved to %s", asset, d / "current.json")
        return d / "current.json"

    def load(self, asset: str, feature_names: tuple[str, ...]) -> LearnedModel | None:
        """The asset's model (current, else previous), or None when none is stored.

        A stored model whose features differ from ``feature_names`` raises :class:`ModelError`
        (the config changed: the operator must relearn, never score with a wrong model).
        """
        errors = []
        for slot in _SLOTS:
            if not (self.asset_dir(asset) / f"{slot}.json").exists():
                continue
            try:
                sm = load_model(self.asset_dir(asset) / slot, feature_names)
            except ModelError as exc:
                if "features differ" in str(exc):
                    raise
                errors.append(f"{slot}: {exc}")
                log.error("asset %s: stored %s model refused: %s", asset, slot, exc)
                continue
            info = {
                k: v
                for k, v in sm.manifest.items()
                if k in ("training_rows", "training_sha256", "agreement", "min_agreement", "int8_rejected")
            }
            return LearnedModel(sm.model, sm.threshold, info)
        if errors:
            raise ModelError(f"asset {asset}: no usable stored model ({'; '.join(errors)})")
        return None

    def rollback(self, asset: str) -> None:
        """Make the previous model current again (the current one becomes previous)."""
        d = self.asset_dir(asset)
        if not (d / "previous.json").exists():
            raise ModelError(f"asset {asset}: no previous model to roll back to")
        for ext in (".npz", ".json"):
            os.replace(d / f"previous{ext}", d / f"rollback{ext}")
            if (d / f"current{ext}").exists():
                os.replace(d / f"current{ext}", d / f"previous{ext}")
            os.replace(d / f"rollback{ext}", d / f"current{ext}")
        _fsync_dir(d)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_models(hot: object, store: ModelStore) -> list[str]:
    """Put every stored model into a :class:`~machinewatch.engine.hotpath.HotPath`; return the assets.

    An asset whose scorer already has a model is left alone. Its alarm machine leaves
    LEARNING at once, so a restart monitors without relearning.
    """
    done = []
    for name, scorer in getattr(hot, "scorers", {}).items():
        if scorer.learned is not None:
            continue
        learned = store.load(name, scorer.names)
        if learned is None:
            continue
        scorer.learned = learned  # one reference assignment: atomic for the scoring path
        hot.alarms[name].start_monitoring()  # type: ignore[attr-defined]
        done.append(name)
    return done


def save_learned(hot: object, store: ModelStore, assets: list[str]) -> int:
    """Persist the freshly learned models of ``assets``; return how many could not be saved.

    Errors (a full disk) are logged, never raised: the model in memory goes on scoring, and
    the asset learns again after a restart.
    """
    failed = 0
    for name in assets:
        learned = hot.scorers[name].learned  # type: ignore[attr-defined]
        if learned is None:
            continue
        try:
            store.save(name, learned)
        except (OSError, ModelError) as exc:
            failed += 1
            log.error("asset %s: could not persist the learned model: %s", name, exc)
    return failed
