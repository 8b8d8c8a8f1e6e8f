"""``Client``: HTTP calls to a modelplane server, errors raised as ``ModelplaneAPIError``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


class ModelplaneAPIError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            return str(body["error"].get("message"))
        if "detail" in body:
            return str(body["detail"])
    return resp.text[:200]


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={"authorization": f"Bearer {api_key}"}
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        text: bool = False,
    ) -> Any:
        try:
            resp = self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            raise ModelplaneAPIError(
                0, f"cannot reach modelplane at {self.base_url}; is it running (modelplane up)?"
            ) from None
        if resp.status_code >= 400:
            raise ModelplaneAPIError(resp.status_code, _message(resp))
        if text:
            return resp.text
        return resp.json() if resp.content else None

    def endpoints(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "/api/endpoints")["data"]
        return data

    def endpoint(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/api/endpoints/{name}")
        return result

    def create_endpoint(
        self,
        name: str,
        model: str,
        *,
        engine: str = "llamacpp",
        replicas: int = 1,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {
            "name": name,
            "model": model,
            "engine": engine,
            "replicas": replicas,
            "options": options or {},
        }
        result: dict[str, Any] = self._call("POST", "/api/endpoints", body)
        return result

    def update_endpoint(self, name: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/api/endpoints/{name}", changes)
        return result

    def delete_endpoint(self, name: str) -> None:
        self._call("DELETE", f"/api/endpoints/{name}")

    def keys(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "/api/keys")["data"]
        return data

    def create_key(
        self,
        name: str,
        role: str = "member",
        expires_at: str | None = None,
        *,
        account: str | None = None,
    ) -> dict[str, Any]:
        """A new key (its secret in ``"key"``), acting for ``account`` if given."""
        body: dict[str, Any] = {"name": name, "role": role, "expires_at": expires_at}
        if account is not None:
            body["account"] = account
        result: dict[str, Any] = self._call("POST", "/api/keys", body)
        return result

    def accounts(self, kind: str) -> list[dict[str, Any]]:
        """Users (``kind`` ``users``) or service accounts (``service-accounts``)."""
        data: list[dict[str, Any]] = self._call("GET", f"/api/{kind}")["data"]
        return data

    def create_account(self, kind: str, name: str, **fields: Any) -> dict[str, Any]:
        """A new user or service account; ``fields``: ``team``, ``role``, ``email``."""
        body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
        result: dict[str, Any] = self._call("POST", f"/api/{kind}", body)
        return result

    def update_account(self, kind: str, name: str, **changes: Any) -> dict[str, Any]:
        """Change ``role``, ``disabled`` or (users) ``email``."""
        result: dict[str, Any] = self._call("PATCH", f"/api/{kind}/{name}", changes)
        return result

    def rotate_key(self, key_id: str) -> dict[str, Any]:
        """A new secret for the key (in ``"key"``); the old one stops working."""
        result: dict[str, Any] = self._call("POST", f"/api/keys/{key_id}/rotate")
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/api/keys/{key_id}")
        return result

    def usage(
        self,
        group_by: str | None = None,
        *,
        since: str | None = None,
        until: str | None = None,
        team: str | None = None,
    ) -> dict[str, Any]:
        """Usage added up per ``group_by`` (team, key, endpoint, route, day) or overall:
        ``{"data": [rows], "total": {...}}``; ``since``/``until`` are ISO 8601."""
        params = _params(group_by=group_by, since=since, until=until, team=team)
        result: dict[str, Any] = self._call("GET", "/api/usage", params=params)
        return result

    def usage_csv(
        self,
        group_by: str | None = None,
        *,
        since: str | None = None,
        until: str | None = None,
        team: str | None = None,
    ) -> str:
        """The same report as CSV text."""
        params = _params(group_by=group_by, since=since, until=until, team=team, format="csv")
        text: str = self._call("GET", "/api/usage", params=params, text=True)
        return text

    def budgets(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("GET", "/api/budgets")["data"]
        return data

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], **params: Any
    ) -> Iterator[str]:
        """Yield the text of a streamed chat completion as it arrives."""
        body = {"model": model, "messages": messages, "stream": True, **params}
        with self._http.stream("POST", "/v1/chat/completions", json=body, timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ModelplaneAPIError(resp.status_code, _message(resp))
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise ModelplaneAPIError(502, str(event["error"].get("message")))
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
