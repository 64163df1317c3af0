"""Listen and advertise addresses in the config: what is accepted, and one line for what is not."""

from __future__ import annotations

import pytest
import zmq

from node.config import ConfigError, load_config, parse_config, render_config
from node.transport.address import bind_socket, connect_socket, parse_host_port, tcp_endpoint


def document(*nodes: dict) -> dict:
    return {"nodes": list(nodes)}


def node(node_id: str, host: str, base: int = 7000, **extra) -> dict:
    return {"id": node_id, "raft": f"{host}:{base + 1}", "client": f"{host}:{base + 2}",
            "chunk": f"{host}:{base + 3}", **extra}


def refused(doc: dict) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, "test.toml")
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_three_hosts_bind_every_interface_and_advertise_their_own_address():
    config = parse_config(document(*(
        node(f"n{i}", f"10.0.0.{i}", raft_bind="0.0.0.0:7001", client_bind="0.0.0.0:7002", chunk_bind="0.0.0.0:7003")
        for i in (1, 2, 3))))
    n2 = config.node("n2")
    assert n2.endpoint("raft") == "tcp://10.0.0.2:7001"
    assert n2.bind_endpoint("raft") == "tcp://0.0.0.0:7001"
    assert n2.bind_address("client") == "0.0.0.0:7002"


def test_bind_defaults_to_the_advertised_address_and_old_positional_construction_still_works():
    config = load_config("configs/local-3.toml")
    n1 = config.node("n1")
    assert n1.bind_endpoint("raft") == n1.endpoint("raft") == "tcp://127.0.0.1:7001"
    assert type(n1)("n9", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3").bind_address("chunk") == "127.0.0.1:3"


def test_ipv6_literals_and_dns_names_are_accepted():
    config = parse_config(document(
        node("n1", "[fd00::1]", raft_bind="[::]:7001"),
        node("n2", "[fd00::2]"),
        node("n3", "node-3.example.com"),
    ))
    assert config.node("n1").endpoint("raft") == "tcp://[fd00::1]:7001"
    assert config.node("n1").bind_endpoint("raft") == "tcp://[::]:7001"
    assert config.node("n3").endpoint("client") == "tcp://node-3.example.com:7002"


def test_render_keeps_the_binds(tmp_path):
    config = parse_config(document(node("n1", "10.0.0.1", raft_bind="0.0.0.0:7001"), node("n2", "10.0.0.2")))
    text = render_config(config)
    assert 'raft_bind = "0.0.0.0:7001"' in text
    (tmp_path / "rendered.toml").write_text(text)
    assert load_config(tmp_path / "rendered.toml").nodes == config.nodes


@pytest.mark.parametrize("doc,expected", [
    (document(node("n1", "10.0.0.1"), node("n2", "10.0.0.1")),
     "nodes[1].raft 10.0.0.1:7001 is used twice (also nodes[0].raft)"),
    (document(node("n1", "0.0.0.0")),
     "nodes[0].raft 0.0.0.0:7001 is a wildcard nobody can connect to: advertise this host's address and put the wildcard in nodes[0].raft_bind"),
    (document(node("n1", "10.0.0.1", raft_bind="0.0.0.0:7009", client_bind="0.0.0.0:7009")),
     "nodes[0].client binds 0.0.0.0:7009, which nodes[0].raft already binds"),
    (document(node("n1", "10.0.0.1", raft_bind="10.0.0.9:7001"), node("n2", "10.0.0.2", raft_bind="10.0.0.9:7001")),
     "nodes[1].raft_bind 10.0.0.9:7001 is used twice (also nodes[0].raft_bind)"),
    (document(node("n1", "10.0.0.1", raft_bind="10.0.0.2:7001"), node("n2", "10.0.0.2")),
     "nodes[0].raft_bind 10.0.0.2:7001 is used twice (also nodes[1].raft)"),
    (document(node("n1", "10.0.0.1", raft_bind="127.0.0.1:7001")),
     "nodes[0].raft_bind 127.0.0.1:7001 is a loopback address but nodes[0].raft advertises 10.0.0.1:7001: other hosts could not reach it"),
    (document(node("n1", "[fd00::1]", raft_bind="0.0.0.0:7001")),
     "nodes[0].raft_bind 0.0.0.0:7001 and nodes[0].raft [fd00::1]:7001 are of different IP versions"),
    (document(node("n1", "127.0.0.1"), node("n2", "10.0.0.2")),
     "nodes[0].chunk advertises a loopback address but nodes[1].raft does not: a node on another host could not reach it"),
    (document(node("n1", "fd00::1")),
     "nodes[0].raft has an IPv6 address without brackets in 'fd00::1:7001' (write [addr]:port)"),
    (document(node("n1", "[fd00::zz]")),
     "nodes[0].raft has an invalid IPv6 address in '[fd00::zz]:7001'"),
    (document(node("n1", "bad_host!")),
     "nodes[0].raft must name an IPv4 address, [IPv6 address] or DNS name, got 'bad_host!'"),
    (document(node("n1", "10.0.0.1", raft_bind="10.0.0.1:0")),
     "nodes[0].raft_bind has an invalid port in '10.0.0.1:0' (1-65535)"),
    (document(node("n1", "10.0.0.1", raft_bind=7001)),
     "nodes[0].raft_bind must be \"host:port\", got 7001"),
    (document(node("n1", "10.0.0.1", gossip_bind="0.0.0.0:1")),
     "unknown setting nodes[0].gossip_bind"),
])
def test_unusable_addresses_are_refused_with_one_line(doc, expected):
    assert refused(doc) == expected


def test_wildcard_binds_on_different_hosts_may_share_a_port():
    parse_config(document(node("n1", "10.0.0.1", raft_bind="0.0.0.0:7001"),
                          node("n2", "10.0.0.2", raft_bind="0.0.0.0:7001")))


@pytest.mark.parametrize("text,expected", [
    ("10.0.0.1:1", "tcp://10.0.0.1:1"),
    ("[::1]:7001", "tcp://[::1]:7001"),
    ("[0:0::1]:7001", "tcp://[::1]:7001"),
    ("Host.Example:80", "tcp://host.example:80"),
    ("127.0.0.1:*", "tcp://127.0.0.1:*"),
])
def test_endpoints(text, expected):
    assert tcp_endpoint(text) == expected


def test_an_all_numeric_name_is_not_a_name():
    with pytest.raises(ValueError):
        parse_host_port("1.2.3:80")


def test_ipv6_loopback_sockets_talk():
    context = zmq.Context()
    try:
        server = context.socket(zmq.ROUTER)
        client = context.socket(zmq.DEALER)
        for socket in (server, client):
            socket.setsockopt(zmq.LINGER, 0)
        bind_socket(server, "[::1]:*")
        connect_socket(client, server.getsockopt_string(zmq.LAST_ENDPOINT))
        client.send(b"over ipv6")
        assert server.poll(5000)
        assert server.recv_multipart()[1] == b"over ipv6"
    finally:
        server.close()
        client.close()
        context.term()


@pytest.mark.parametrize("name", ["local-3", "local-5", "single", "hosts-3"])
def test_every_shipped_config_loads(name):
    config = load_config(f"configs/{name}.toml")
    assert config.nodes
    if name == "hosts-3":
        assert {n.bind_address("raft") for n in config.nodes} == {"0.0.0.0:7001"}
        assert len({n.raft for n in config.nodes}) == 3


def test_a_limit_under_its_old_name_is_refused_with_the_new_name(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('[cluster]\nmax_frame_bytes = 1048576\n\n[[nodes]]\nid = "n1"\nraft = "127.0.0.1:7001"\n'
                    'client = "127.0.0.1:8001"\nchunk = "127.0.0.1:9001"\n')
    with pytest.raises(ConfigError, match=r"cluster.max_frame_bytes is now called cluster.frame_bytes_max"):
        load_config(path)
