import re

# A sentence ends with . ! or ? followed by white space (or the end of the text).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class PythonPredictor:
    def __init__(self, config):
        self.sentences = int(config.get("sentences", 2))

    def predict(self, payload, query_params):
        # Content-Type: text/plain gives a str, decoded with its charset= (utf-8 by default);
        # a body sent as anything else arrives as bytes.
        text = payload.decode("utf-8") if isinstance(payload, bytes) else str(payload)
        count = int(query_params.get("sentences", self.sentences))
        sentences = [s for s in SENTENCE_END.split(" ".join(text.split())) if s]
        return " ".join(sentences[:count])  # a str is answered as text/plain; charset=utf-8
