import json
import urllib.request

from cortex_internal.lib.log import logger


class PythonPredictor:
    def __init__(self, config):
        self.pricing_url = config.get("pricing_url")

    def predict(self, payload, headers, request_id):
        url = self.pricing_url or f"http://{headers['Host']}/pricing"
        request = urllib.request.Request(
            url, data=json.dumps({"items": list(payload["basket"])}).encode(),
            # the same X-Request-ID follows the call into the other API's logs
            headers={"Content-Type": "application/json", "X-Request-ID": request_id})
        with urllib.request.urlopen(request, timeout=10) as response:
            prices = json.load(response)
        missing = sorted(item for item, price in prices.items() if price is None)
        total = sum(price * payload["basket"][item] for item, price in prices.items()
                    if price is not None)
        logger.info("priced a basket", extra={"request_id": request_id, "items": len(prices)})
        return {"total": round(total, 2), "unknown_items": missing}
