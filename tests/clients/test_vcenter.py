"""VMware vCenter Server / ESXi key provider (standard key provider, KMIP 1.1).

From VMware's documentation of the vSphere encryption flow: vCenter asks the KMS for a new key
(Create AES-256), keeps only its id, tags the object with custom attributes naming itself
(x-Vendor, x-Product, x-Product_Version, x-Name...), reads the key (Get) to hand it to the hosts,
checks its State and activates it, and finds its keys again by attribute (Locate).
"""

from __future__ import annotations

import pytest
from kmip.core import enums
from kmip.core.enums import Operation
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv

from ..e2e.conftest import Instance, Server
from .wire import Conversation, attr, payload, uid, v

pytestmark = pytest.mark.e2e
V11 = (1, 1)
TAGS = {"x-Vendor": "VMware, Inc.", "x-Product": "VMware vSphere", "x-Product_Version": "7.0.3",
        "x-Name": "vm-5f1c9a"}


def test_vcenter_conversation(server: Server, instance: Instance) -> None:
    with Conversation(server, instance, "vcenter", V11) as c:
        versions = c.discover([V11, (1, 0)])
        assert set(versions) == {V11, (1, 0)}
        key = c.create_aes()
        # vCenter first reads its custom attributes: absent ones are simply not returned.
        assert c.attributes(key, *TAGS) == {}
        for name, value in TAGS.items():
            p = c.call(Operation.ADD_ATTRIBUTE, payload(uid(key), attr(name, v("text", value))))
            echoed = p.get(T.ATTRIBUTE.value)
            assert echoed is not None and echoed.value_of(T.ATTRIBUTE_NAME.value) == name
        got = c.attributes(key, *TAGS)
        assert {n: [x.value for x in vals] for n, vals in got.items()} == {n: [t] for n, t in TAGS.items()}
        obj, material = c.get_key_material(key)
        assert obj.tag == T.SYMMETRIC_KEY.value and len(material) == 32
        assert c.state(key) == enums.State.PRE_ACTIVE.value
        c.activate(key)
        assert c.state(key) == enums.State.ACTIVE.value
        found, located = c.locate(attr("x-Name", v("text", TAGS["x-Name"])))
        assert found == [key]
        assert located is None  # Located Items is a KMIP 1.3 field


def test_vcenter_retried_add_attribute_keeps_one_instance(server: Server, instance: Instance) -> None:
    """vCenter resends a request whose reply it lost: the same custom attribute value added twice
    stays one instance; a different value is a second instance."""
    with Conversation(server, instance, "vcenter", V11) as c:
        key = c.create_aes()
        add = payload(uid(key), attr("x-Vendor", v("text", "VMware, Inc.")))
        first = c.call(Operation.ADD_ATTRIBUTE, add)
        c.reconnect()  # the reply was lost; the client reconnects and sends the same request
        again = c.call(Operation.ADD_ATTRIBUTE, add)
        assert ttlv.encode(first) == ttlv.encode(again)
        assert [x.value for x in c.attributes(key, "x-Vendor")["x-Vendor"]] == ["VMware, Inc."]
        c.call(Operation.ADD_ATTRIBUTE, payload(uid(key), attr("x-Vendor", v("text", "Broadcom"))))
        assert sorted(x.value for x in c.attributes(key, "x-Vendor")["x-Vendor"]) == ["Broadcom", "VMware, Inc."]
