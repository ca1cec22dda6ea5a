"""``webhook`` actuator: HTTP POST of the alarm event as JSON (aiohttp).

Options
-------
::

    [actuators.pager]
    kind = "webhook"
    url = "https://ops.example.com/hooks/machinewatch"
    # timeout_s = 5.0
    # token_env = "MW_WEBHOOK_TOKEN"     # sent as "Authorization: Bearer <token>" (or token_file)
    # plus min_on_s, min_off_s, max_changes_per_min, safe_state (the engine's actuator policy)

Body: ``{"asset", "energised", "site", "t_ns", "from", "to", "reason", "score", "threshold",
"top_features", "kind"}``; a non-2xx answer or a network error raises ``ConnectorError``.
"""

from __future__ import annotations

__all__ = ["WebhookActuator"]

import logging
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

from machinewatch.connectors.actuators.policy import POLICY_KEYS, policy_problems
from machinewatch.connectors.base import Actuator
from machinewatch.engine.config import Config, resolve_secret
from machinewatch.engine.errors import ConfigProblem, ConnectorError
from machinewatch.engine.types import AlarmEvent

log = logging.getLogger(__name__)
_KEYS = POLICY_KEYS | {"url", "timeout_s", "token_env", "token_file"}


def event_body(asset: str, energised: bool, event: AlarmEvent | None, site: str) -> dict[str, Any]:
    """The JSON body of one output change."""
    body: dict[str, Any] = {"asset": asset, "energised": energised, "site": site}
    if event is not None:
        body |= {
            "site": event.site,
            "t_ns": event.t_ns,
            "from": event.from_state,
            "to": event.to_state,
            "reason": event.reason,
            "kind": event.kind,
            "top_features": list(event.top_features),
            "score": event.score if math.isfinite(event.score) else None,
            "threshold": event.threshold if math.isfinite(event.threshold) else None,
        }
    else:
        body["reason"] = "safe state"
    return body


class WebhookActuator(Actuator):
    """POSTs each output change."""

    def __init__(self, name: str, options: Mapping[str, Any], config: Config) -> None:
        super().__init__(name, options, config)
        self.url = str(self.options["url"]) if "url" in self.options else ""
        self.timeout_s = float(self.options.get("timeout_s", 5.0))
        self.safe_on = bool(self.options.get("safe_state", False))
        self.assets = [a.name for a in config.assets.values() if name in a.alarm.actuators]
        self._session: aiohttp.ClientSession | None = None
        self._headers: dict[str, str] = {}
        self._driven: dict[str, bool] = {}

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        probs = [ConfigProblem(f"{path}.{k}", "unknown key") for k in options if k not in _KEYS]
        probs += policy_problems(options, path)
        url = options.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            probs.append(ConfigProblem(f"{path}.url", "must be an http:// or https:// URL"))
        return probs

    async def __aenter__(self) -> WebhookActuator:
        token = resolve_secret(self.options, "token", f"actuators.{self.name}")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def set(self, asset: str, energised: bool, event: AlarmEvent | None) -> None:
        if self._session is None:
            raise ConnectorError(f"webhook {self.name}: not open")
        body = event_body(asset, energised, event, self.config.engine.site)
        try:
            async with self._session.post(self.url, json=body, headers=self._headers) as r:
                if not 200 <= r.status < 300:
                    raise ConnectorError(f"webhook {self.name}: HTTP {r.status} from {self.url}")
            self._driven[asset] = energised
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectorError(f"webhook {self.name}: {exc!r}") from exc

    async def safe_state(self) -> None:
        for asset, on in list(self._driven.items()):  # only outputs it ever drove: no noise at stop
            if on == self.safe_on:
                continue
            try:
                await self.set(asset, self.safe_on, None)
            except ConnectorError as exc:
                log.error("%s", exc)

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
