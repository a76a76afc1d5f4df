import collections
import re

from cortex_internal.lib.log import logger

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


class PythonPredictor:
    def __init__(self, config):
        self.top = int(config.get("top", 3))

    def predict(self, payload, request_id):
        # text/plain arrives as str, application/json as what it decodes to
        text = payload.get("text") if isinstance(payload, dict) else payload
        if not isinstance(text, str) or not text.strip():
            raise ValueError("send some text (text/plain, or JSON {\"text\": ...})")
        words = [w.lower() for w in WORD.findall(text)]
        counts = collections.Counter(words)
        logger.info("counted words", extra={"workload": request_id, "words": len(words)})
        return {
            "words": len(words),
            "distinct": len(counts),
            "sentences": len([s for s in re.split(r"[.!?]+", text) if s.strip()]),
            "top": [[word, n] for word, n in counts.most_common(self.top)],
        }
