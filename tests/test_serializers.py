"""Serializers whose fields are built once per class (trading.api.serializers.FieldsBuiltOnce)."""

import pytest
from rest_framework import serializers

from trading.api.serializers import FieldsBuiltOnce, OrderCreateSerializer, OrderSerializer


@pytest.mark.parametrize("serializer_class", [OrderSerializer, OrderCreateSerializer])
def test_each_instance_binds_fields_of_its_own(serializer_class):
    first, second = serializer_class(), serializer_class()
    assert set(first.fields) == set(second.fields)
    for name in first.fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second


def test_one_requests_errors_do_not_reach_the_next():
    bad = OrderCreateSerializer(data={"pair": "BTC-USD", "side": "sideways", "type": "limit", "price": "1e3"})
    assert not bad.is_valid()
    assert set(bad.errors) == {"side", "price"}
    good = OrderCreateSerializer(data={"pair": "BTC-USD", "side": "buy", "type": "limit", "price": "1", "size": "1"})
    assert good.is_valid(), good.errors
    assert good.validated_data.side == "buy"


def test_a_nested_serializer_is_refused():
    class Outer(FieldsBuiltOnce, serializers.Serializer):
        inner = OrderCreateSerializer()

    with pytest.raises(TypeError, match="inner"):
        _ = Outer().fields
