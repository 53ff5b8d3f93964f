"""The models built around a bottleneck layer.

- `autoencoder`: `build_autoencoder(bottleneck, ...)`, the paper's MLP (MNIST,
  digits) and CNN (SVHN, CIFAR-10), the `Autoencoder` model that logs each loss
  term, and the `CodebookUsage` metric;
- `subpixel`: `SubPixelConv2DTranspose`, the CNN decoder's transposed
  convolution computed as a sub-pixel convolution on JAX.

The layers themselves live in `softvq_keras.layers`; this package only
assembles them.
"""

from softvq_keras.models.autoencoder import Autoencoder, CodebookUsage, build_autoencoder
from softvq_keras.models.subpixel import SubPixelConv2DTranspose

__all__ = ["Autoencoder", "CodebookUsage", "SubPixelConv2DTranspose", "build_autoencoder"]
