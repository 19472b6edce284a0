"""Custom Keras layers for what Keras lacks; all registered as `hms_keras>...` serializables."""

from hms_keras.layers.activations import elu
from hms_keras.layers.depthwise import ShiftedDepthwiseConv2D
from hms_keras.layers.hemispheres import CosineSimilarity, SplitHemispheres, StackHemispheres
from hms_keras.layers.pointwise import PointwiseDense
from hms_keras.layers.pooling import GeMPooling2D, SlicedMaxPooling2D
from hms_keras.layers.remat import Rematerialized

__all__ = [
    "CosineSimilarity",
    "GeMPooling2D",
    "PointwiseDense",
    "Rematerialized",
    "ShiftedDepthwiseConv2D",
    "SlicedMaxPooling2D",
    "SplitHemispheres",
    "StackHemispheres",
    "elu",
]
