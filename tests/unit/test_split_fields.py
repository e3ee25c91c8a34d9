"""The binary fields of polynomial key splitting: GF(2^8) and GF(2^16) arithmetic, and Shamir
sharing over each (any threshold of parts gives the key back, fewer do not)."""

from __future__ import annotations

import itertools
import secrets

import pytest

from kmip_bridge.operations import split_keys as sk
from kmip_bridge.protocol.errors import KmipError


@pytest.mark.parametrize(("field", "generator"), [(sk.GF8, 3), (sk.GF16, 2)])
def test_the_field_has_a_generator(field: tuple[int, int], generator: int) -> None:
    # One element generates all 2^bits - 1 non-zero elements: the polynomial is irreducible (a
    # field, every non-zero element invertible). For GF(2^16) that element is x: primitive.
    order, x = 0, 1
    while True:
        x, order = sk._gf_mul(x, generator, field), order + 1
        if x == 1:
            break
    assert order == (1 << field[0]) - 1


@pytest.mark.parametrize("field", [sk.GF8, sk.GF16])
def test_inverse(field: tuple[int, int]) -> None:
    for a in (1, 2, 3, 0x53, (1 << field[0]) - 1, secrets.randbelow((1 << field[0]) - 1) + 1):
        assert sk._gf_mul(a, sk._gf_inv(a, field), field) == 1


@pytest.mark.parametrize("field", [sk.GF8, sk.GF16])
def test_any_threshold_of_parts_gives_the_key_back(field: tuple[int, int]) -> None:
    key = secrets.token_bytes(32)
    shares = sk._gf_split(key, 5, 3, field)
    assert key not in shares and all(len(s) == len(key) for s in shares)
    for combo in itertools.combinations(range(5), 3):
        assert sk._gf_join({i + 1: shares[i] for i in combo}, field) == key
    for combo in itertools.combinations(range(5), 2):
        assert sk._gf_join({i + 1: shares[i] for i in combo}, field) != key


def test_gf16_needs_whole_16_bit_words() -> None:
    with pytest.raises(KmipError):
        sk._gf_split(b"odd", 3, 2, sk.GF16)
    with pytest.raises(KmipError):
        sk._gf_join({1: b"abc", 2: b"abc"}, sk.GF16)
