"""Keras 3 layers: a sampled-softmax output layer and the model that trains it."""
from tf_sampled.layers.chunked import ClassChunks, full_softmax_stats
from tf_sampled.layers.metrics import Perplexity, TopKFromRank, importance_ess
from tf_sampled.layers.model import SampledSoftmaxModel
from tf_sampled.layers.sampled_softmax import SampledSoftmax
