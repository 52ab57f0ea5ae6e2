"""Port choice for `svoe run`, the benches and the tests: a chosen port stays ours until a child binds it."""

from __future__ import annotations

import socket

from svoe.net import free_port, port_free


def test_a_reserved_port_is_not_handed_out_again_but_a_server_can_bind_it() -> None:
    reserved = {free_port() for _ in range(20)}
    handed_out = set()
    for _ in range(5000):  # what another run or test worker asking the OS for a port would get
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            handed_out.add(s.getsockname()[1])
    assert not reserved & handed_out
    port = reserved.pop()
    with socket.create_server(("0.0.0.0", port)):  # sets SO_REUSEADDR, as our servers do
        assert not port_free(port)
    assert port_free(port)


def test_only_a_listener_makes_a_port_busy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        assert not port_free(port) and not port_free(port, "127.0.0.1")
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        conn.close()  # the server side closes first, as after a scrape, and leaves TIME_WAIT
        client.close()
    assert port_free(port)  # the next run may take its default port again
