"""The demo's data: scikit-learn's bundled handwritten digits (1,797 8x8 images, no download),
split once into training and held-out test images, scaled to [0, 1] as the model expects."""

import numpy as np


__all__ = ["MODEL", "TEST_FRACTION", "load_split"]

#: The committed demo model (trained by ``python -m rowstation.sim.train_digits``).
MODEL = __import__("pathlib").Path(__file__).parent / "models" / "digits_cnn.onnx"
TEST_FRACTION = 0.25


def load_split(seed=0):
    """((train images, train labels), (test images, test labels)); images (n, 1, 8, 8) float32
    in [0, 1], the split stratified by label and fixed by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=TEST_FRACTION,
                                                        random_state=seed, stratify=digits.target)
    return (x_train, y_train), (x_test, y_test)
