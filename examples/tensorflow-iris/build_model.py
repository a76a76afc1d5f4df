"""Trains a small softmax classifier on the iris data set (bundled with scikit-learn) and
exports it as a SavedModel shaped like Cortex's iris example: four float inputs of shape
[-1] (sepal_length, sepal_width, petal_length, petal_width), outputs class_ids (int64
[-1, 1]) and probabilities (float32 [-1, 3]).

    python build_model.py [MODELS_DIR]      # default: models/ beside this file -> models/iris/1
"""
import os
import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


class IrisModel(tf.Module):
    def __init__(self, mean, scale, weights, bias):
        super().__init__()
        self.mean, self.scale = tf.constant(mean), tf.constant(scale)
        self.weights, self.bias = tf.Variable(weights), tf.Variable(bias)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name=n) for n in FEATURES])
    def serve(self, sepal_length, sepal_width, petal_length, petal_width):
        x = (tf.stack([sepal_length, sepal_width, petal_length, petal_width], axis=1)
             - self.mean) / self.scale
        logits = tf.matmul(x, self.weights) + self.bias
        return {"class_ids": tf.argmax(logits, axis=1, output_type=tf.int64)[:, None],
                "probabilities": tf.nn.softmax(logits)}


def train():
    data = load_iris()
    x, y = data.data.astype(np.float32), data.target
    mean, scale = x.mean(axis=0), x.std(axis=0)
    xs = (x - mean) / scale
    weights = tf.Variable(tf.zeros([4, 3]))
    bias = tf.Variable(tf.zeros([3]))
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.5)
    for _ in range(300):  # deterministic: full batch from zeros
        with tf.GradientTape() as tape:
            logits = tf.matmul(xs, weights) + bias
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, [weights, bias]), [weights, bias]))
    return IrisModel(mean, scale, weights.numpy(), bias.numpy())


def main(models_dir):
    model = train()
    path = os.path.join(models_dir, "iris", "1")
    tf.saved_model.save(model, path, signatures={"serving_default": model.serve})
    print(path)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "models"))
