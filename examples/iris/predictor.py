from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# Payload keys in the column order of load_iris().data.
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class PythonPredictor:
    def __init__(self, config):
        # Training takes well under a second and the data ships with
        # scikit-learn, so the example needs no model file or download.
        iris = load_iris()
        self.labels = [str(name) for name in iris.target_names]
        self.model = LogisticRegression(
            max_iter=int(config.get("max_iter", 1000)),
            random_state=int(config.get("random_state", 0)),
        )
        self.model.fit(iris.data, iris.target)

    def predict(self, payload):
        missing = [name for name in FEATURES if name not in payload]
        if missing:
            raise ValueError(f"payload is missing {', '.join(missing)}")
        row = [[float(payload[name]) for name in FEATURES]]
        return self.labels[int(self.model.predict(row)[0])]
