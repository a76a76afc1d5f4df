from pathlib import Path

HERE = Path(__file__).parent
BASKET = {"basket": {"apple": 4, "milk": 1, "caviar": 1}}


def test_shop_calls_pricing_on_the_same_port(cortex_api):
    apis = cortex_api(HERE)  # both APIs of the file, one server
    assert sorted(apis.names) == ["pricing", "shop"]
    response = apis["shop"].post(json=BASKET, headers={"X-Request-ID": "basket-1"})
    assert response.status_code == 200, apis["shop"].logs()
    assert response.json() == {"total": 3.2, "unknown_items": ["caviar"]}
    # the call arrived at pricing with the same request id
    pricing_access = [line for line in apis["pricing"].logs() if line.get("path") == "/pricing"]
    assert [line["request_id"] for line in pricing_access] == ["basket-1"]
    assert apis["pricing"].metric("cortex_status_code", response_code="2XX") == 1


def test_pricing_alone(cortex_api):
    pricing = cortex_api(HERE, api="pricing")
    assert pricing.names == ["pricing"]
    assert pricing.post(json={"items": ["bread"]}).json() == {"bread": 2.25}
    assert pricing.post("/shop", json=BASKET).status_code == 404  # not served


def test_shop_pointed_at_a_separately_started_pricing(cortex_api):
    pricing = cortex_api(HERE, api="pricing", config={"prices": {"apple": 1.0}})
    shop = cortex_api(HERE, api="shop", config={"pricing_url": pricing.url})
    assert shop.port != pricing.port
    assert shop.post(json=BASKET).json() == {"total": 4.0, "unknown_items": ["caviar", "milk"]}
