"""The runnable demos run (they are the README's first command)."""

from __future__ import annotations

import pytest

from examples import quic_demo, two_party
from mlsquic.testing import free_udp_port


def test_two_party_demo(capsys) -> None:
    assert two_party.main(["--rekeys", "2"]) == 0
    out = capsys.readouterr().out
    assert "exporters equal: True" in out and "RESUMPTION_REQUEST" in out


@pytest.mark.parametrize("mode", ["mls", "alongside"])
def test_quic_demo_both_roles(capsys, mode: str) -> None:
    quic_demo.main(["both", "--mode", mode, "--port", str(free_udp_port()), "--rounds", "3", "--interval", "0.05",
                    "--size", "20000", "--rekey-seconds", "0.05"])
    out = capsys.readouterr().out
    assert out.count("intact=True") == 3 and "connected in" in out
