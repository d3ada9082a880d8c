"""Drives Portico's admin API with the real `apisix-client` package from PyPI.

Usage: driver.py BASE_URL API_KEY BACKEND_HOST BACKEND_PORT
Creates, reads, updates and deletes upstreams, services, routes and consumers the way an
APISIX user of this client would, and fails (exit 1, message on stderr) at the first
answer that differs from what APISIX gives the client.
"""

import sys

from apisix_client import ApisixClient
from apisix_client.consumer.models import Consumer
from apisix_client.plugin import KeyAuth
from apisix_client.route.models import Route
from apisix_client.service.models import Service
from apisix_client.upstream.models import Node, Upstream


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


def strict_delete(delete, id):
    # The client reads `deleted` as an etcd count (`int("1")`, as APISIX answers); a
    # ValueError here means Portico's DELETE envelope is not APISIX's.
    delete(id)


def main():
    base_url, api_key, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c = ApisixClient(base_url=base_url, api_key=api_key)

    # Upstreams.
    up = Upstream(name="u1", nodes=[Node(host=host, port=port, weight=1)])
    check(c.upstream.create_or_update(up, "u1") == "u1", "upstream create_or_update")
    got = c.upstream.get("u1")
    check(got is not None and got.value.name == "u1", f"upstream get: {got}")
    check(got.key == "/apisix/upstreams/u1", f"upstream key: {got.key}")
    up2 = Upstream(name="u1-renamed", nodes=[Node(host=host, port=port, weight=2)])
    check(c.upstream.create_or_update(up2, "u1") == "u1", "upstream update")
    check(c.upstream.get("u1").value.name == "u1-renamed", "upstream updated")
    check(c.upstream.count() == 1, "upstream count")

    # Services.
    svc = Service(name="s1", upstream_id="u1")
    check(c.service.create_or_update(svc, "s1") == "s1", "service create_or_update")
    got = c.service.get("s1")
    check(got is not None and got.value.upstream_id == "u1", f"service get: {got}")

    # Routes: by id and with a generated id.
    route = Route(name="r1", uri="/client/*", service_id="s1")
    check(c.route.create_or_update(route, "r1") == "r1", "route create_or_update")
    got = c.route.get("r1")
    check(got is not None and got.value.uri == "/client/*", f"route get: {got}")
    generated = c.route.create_with_id_generation(Route(name="r2", uri="/gen", upstream_id="u1"))
    check(generated is not None and len(generated) > 0, f"route generated id: {generated}")
    check(c.route.count() == 2, f"route count: {c.route.count()}")
    check(len(c.route.get_all()) == 2, "route get_all")

    # Consumers.
    jack = Consumer(username="jack", plugins=[KeyAuth(key="auth-one")], desc="d")
    check(c.consumer.create_or_update(jack) is True, "consumer create_or_update")
    dup = Consumer(username="rose", plugins=[KeyAuth(key="auth-one")])
    check(c.consumer.create_or_update(dup) is False, "a duplicate key is refused")
    raw = c._httpx_client.get("/consumers/jack").json()
    check(raw["value"]["plugins"]["key-auth"]["key"] == "auth-one", f"consumer raw: {raw}")
    check(c.consumer.count() == 1, "consumer count")

    # Deletes, in reference order.
    check(c.route.delete(generated), "route delete (generated)")
    check(c.route.delete("r1"), "route delete")
    check(c.service.delete("s1"), "service delete")
    strict_delete(c.upstream.delete, "u1")
    check(c.upstream.get("u1") is None, "upstream deleted")
    strict_delete(c.consumer.delete, "jack")
    check(c.consumer.count() == 0, "consumer deleted")
    print("OK")


if __name__ == "__main__":
    main()
