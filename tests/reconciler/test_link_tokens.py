"""Host-to-host link tokens (reconciler/controller/link_tokens.py): one per link target, under a key
kept in the state store (the same after a restart), different per environment, app and component,
and added only to the host's own answer (the published document keeps none)."""

from __future__ import annotations

from pathlib import Path

from reconciler.controller.link_tokens import link_key, link_token, with_link_tokens
from reconciler.controller.state import Store
from wire.control import HostDesiredState, InstanceLink, InstanceSpec

HTTP = "wasi:http/incoming-handler@0.2.0"


def _spec(env: str, component: str, *links: InstanceLink) -> InstanceSpec:
    return InstanceSpec(id=f"{env}/shop/{component}/0", env=env, app="shop", component=component,
                        image="r/x@sha256:" + "0" * 64, digest="sha256:" + "0" * 64, links=links)


def test_link_tokens_are_scoped_to_the_target_and_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    key = link_key(store)
    store.close()
    again = Store(tmp_path / "state.db")
    assert link_key(again) == key and len(key) == 32  # kept: hosts' tokens stay valid across a restart
    again.close()

    doc = HostDesiredState(host="h1", generation=3, instances=(
        _spec("dev", "front", InstanceLink(interface=HTTP, to_component="api"),
              InstanceLink(interface="driftless:demo/greeter", to_component="greeter")),
        _spec("dev", "api"),
    ))
    revealed = with_link_tokens(doc, key=key)
    front, api = revealed.instances
    http_link, typed_link = front.links
    # the caller's token for api is the one api's host accepts; a typed link gets none
    assert http_link.token == api.link_token == link_token(key, env="dev", app="shop", component="api")
    assert typed_link.token is None
    assert front.link_token != api.link_token
    # another environment, app or key: another token (a dev host holds nothing that opens prod)
    others = {link_token(key, env="prod", app="shop", component="api"),
              link_token(key, env="dev", app="shop2", component="api"),
              link_token(b"x" * 32, env="dev", app="shop", component="api")}
    assert api.link_token not in others and len(others) == 3
    # on the wire for the host; the published document has none
    assert revealed.to_json()["instances"][0]["links"][0]["token"] == http_link.token
    assert HostDesiredState.from_json(revealed.to_json()) == revealed
    assert "token" not in str(doc.to_json()) and "linkToken" not in str(doc.to_json())
