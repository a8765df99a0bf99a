"""The operator's side of the scoring API: reload the models, change the routing.

What the monitor's actions call after they move an alias. A failure is reported, never
raised: the registry change is what counts, and the API's alias watcher finds it on its
next poll even when this call did not get through.
"""

from __future__ import annotations

import httpx

from fraudlab.settings import Settings

ADMIN_TIMEOUT_SECONDS = 30.0  # a reload loads models: seconds on a busy machine


class ServingAdmin:
    def __init__(self, settings: Settings) -> None:
        self.url = settings.api_url
        token = settings.serving.admin_token
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _post(self, path: str, body: dict[str, object] | None = None) -> str:
        if not self.headers:
            return "serving not told (no admin token); its alias watcher will notice"
        try:
            response = httpx.post(
                f"{self.url}{path}", json=body, headers=self.headers, timeout=ADMIN_TIMEOUT_SECONDS
            )
            return f"serving {path}: HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            return f"serving {path} unreachable ({type(exc).__name__}); the watcher will notice"

    def set_canary(self, share: float) -> str:
        return self._post("/admin/routing", {"canary_share": share})

    def reload(self) -> str:
        return self._post("/admin/reload")
