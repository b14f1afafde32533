"""The layers: each as a pure forward/backward pair and as a Module (see DESIGN.md)."""

from .activation import (GELU, Activation, ReLU, Softmax, activation_functions, gelu_backward,
                         gelu_forward, gelu_tanh_backward, gelu_tanh_forward, relu_backward,
                         relu_forward, softmax_backward, softmax_forward)
from .attention import KVCache, MultiHeadAttention, merge_heads, split_heads
from .block import Block, DecoderLayer, EncoderLayer
from .dropout import Dropout, dropout_backward, dropout_forward
from .embedding import (Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                        embedding_backward, embedding_forward, sinusoidal_encoding)
from .linear import Linear, linear_backward, linear_forward
from .loss import CrossEntropyLoss, cross_entropy_backward, cross_entropy_forward
from .mlp import MLP
from .module import Module, ModuleList, Parameter, flatten_parameters
from .norm import LayerNorm, layernorm_backward, layernorm_forward
