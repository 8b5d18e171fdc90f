import itertools

import pytest

from archetype.errors import SpecError
from archetype.searchspace.nb201 import NB201_OPS, format_fbnet, format_nb201, parse_fbnet, parse_nb201

KNOWN = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_parses_edges_in_published_order():
    assert parse_nb201(KNOWN) == (
        "nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect",
    )


def test_every_cell_round_trips():
    for ops in itertools.product(NB201_OPS, repeat=6):
        assert parse_nb201(format_nb201(ops)) == ops


@pytest.mark.parametrize("bad", [
    "", "|nor_conv_3x3~0|", KNOWN.replace("~1|+", "~0|+"), KNOWN.replace("avg_pool_3x3", "max_pool"),
    KNOWN.replace("+", "-"), KNOWN[1:],
])
def test_refuses_malformed_strings(bad):
    with pytest.raises(SpecError, match="NB201 arch string"):
        parse_nb201(bad)


def test_fbnet_accepts_list_and_text_and_refuses_bad_layers():
    layers = ["k3_e1"] * 21 + ["skip"]
    assert parse_fbnet(layers) == tuple(layers)
    assert parse_fbnet(format_fbnet(layers)) == tuple(layers)
    with pytest.raises(SpecError, match="22 layers"):
        parse_fbnet(layers[:-1])
    with pytest.raises(SpecError, match="layer 3"):
        parse_fbnet([*layers[:3], "k7_e6", *layers[4:]])
