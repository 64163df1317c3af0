"""The ZAP decision, without sockets: every way a handshake is refused, and what an accepted
one is called."""

from __future__ import annotations

import pytest
from zmq.utils import z85

from node.security import KIND_CLIENT, KIND_NODE, KeyRing
from node.security.zap import decide, zap_domain


@pytest.fixture
def keyring(keys_dir):
    return KeyRing.load(keys_dir)


def raw_key(keyring, kind, name):
    return z85.decode(keyring.keypair(kind, name).public_key)


def test_a_known_node_key_on_the_raft_port_is_accepted_as_its_z85_key(keyring):
    key = raw_key(keyring, KIND_NODE, "n2")
    decision = decide("curve", keyring, zap_domain(keyring.cluster_id, "raft"), b"CURVE", [key])
    assert decision.accepted and decision.user_id == z85.encode(key)
    assert decision.reason == "node n2"


@pytest.mark.parametrize("domain, mechanism, port_kind, expected", [
    ("other/raft", b"CURVE", (KIND_NODE, "n2"), "not one of cluster"),
    ("{cluster}/nowhere", b"CURVE", (KIND_NODE, "n2"), "not one of cluster"),
    ("{cluster}/raft", b"CURVE", (KIND_CLIENT, "admin"), "on the raft port, which serves only nodes"),
    ("{cluster}/client", b"PLAIN", (KIND_CLIENT, "admin"), "a PLAIN handshake on a CurveZMQ client port"),
])
def test_refusals(keyring, domain, mechanism, port_kind, expected):
    key = raw_key(keyring, *port_kind)
    decision = decide("curve", keyring, domain.format(cluster=keyring.cluster_id).encode(), mechanism, [key])
    assert not decision.accepted and decision.status == b"400"
    assert expected in decision.reason


def test_an_unknown_or_malformed_key_is_refused(keyring):
    domain = zap_domain(keyring.cluster_id, "client")
    assert "does not know" in decide("curve", keyring, domain, b"CURVE", [b"\x01" * 32]).reason
    assert not decide("curve", keyring, domain, b"CURVE", [b"short"]).accepted
    assert not decide("curve", keyring, domain, b"CURVE", []).accepted
    assert not decide("curve", keyring, domain, b"NULL", []).accepted


def test_plaintext_checks_the_cluster_id_and_the_claimed_name(keyring):
    domain = zap_domain(keyring.cluster_id, "raft")
    cluster = keyring.cluster_id.encode()
    accepted = decide("plaintext", keyring, domain, b"PLAIN", [b"node/n2", cluster])
    assert accepted.accepted and accepted.user_id == b"node/n2"
    assert "of another cluster" in decide("plaintext", keyring, domain, b"PLAIN", [b"node/n2", b"0" * 32]).reason
    assert "invalid plain-text user name" in decide("plaintext", keyring, domain, b"PLAIN", [b"node/a b", cluster]).reason
    assert "serves only nodes" in decide("plaintext", keyring, domain, b"PLAIN", [b"client/x", cluster]).reason
    assert not decide("plaintext", keyring, domain, b"CURVE", [b"\x01" * 32]).accepted
