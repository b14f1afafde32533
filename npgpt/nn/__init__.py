"""The layers: each as a pure forward/backward pair and as a Module.

The conventions every layer here follows:

    names      x_forward / x_backward: the pure functions, NumPy only, the math on the page
               (they may call the registry's primitives matmul, attention, erf, whose readable
               definition is kernels/reference.py). X, in CamelCase: the Module, which owns
               the Parameters, keeps the cache, and chooses a backend's fused kernel, in one
               line per call: `forward = kernels.fused("x_forward") or x_forward`.
    arguments  the arrays first, in the order of the formula (x, w, b), then the options
               (eps, need_dw, dw_out, rng, train).
    forward    returns (out, cache). The cache holds what the backward needs and is never
               written to afterwards; with more than three fields it is a NamedTuple, and a
               cache a fused kernel shares is defined once, in kernels/reference.py.
    backward   x_backward(dout, cache, ...) returns one gradient per array input of the
               forward, in the forward's argument order (the array itself when there is one),
               None for one it skipped (need_dw=False, no bias). Integer inputs (token ids,
               targets) get none.
    dw_out     "add the weight's gradient into this array and return it": the Module passes
               its Parameter's .grad, so no weight-sized temporary is made.
    Module     forward(...) -> out; backward(dout) adds (+=) into each Parameter's .grad and
               returns the gradient of its input(s).
    docstring  a Module's class docstring displays its math under the headers `forward:` and
               `backward:`, the lines indented under each; a header may name the attribute
               values it holds for: `forward (norm_first=True):`. There f'(d) is f's backward
               applied to d (d times f's Jacobian: the vector-Jacobian product). npgpt.trace
               reads these lines at run time and prints them beside every call it records.
    shapes     activations (B, T, C), attention heads (B, H, T, D), weights (in, out) so that
               y = x @ W + b; a function documented on (..., C) takes any leading axes.
    dtypes     float32 or float64, one per layer, that of its Parameters: an input of another
               dtype is an error, never a silent upcast. Token ids are integers (int64 inside).
"""

from .activation import (GELU, Activation, ReLU, Softmax, activation_functions, gelu_backward,
                         gelu_forward, gelu_tanh_backward, gelu_tanh_forward, relu_backward,
                         relu_forward, softmax_backward, softmax_forward)
from .attention import KVCache, MultiHeadAttention, merge_heads, split_heads
from .block import Block, DecoderLayer, EncoderLayer
from .dropout import Dropout, dropout_backward, dropout_forward
from .embedding import (Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                        embedding_backward, embedding_forward, sinusoidal_encoding)
from .head import TiedHead, tied_head_backward, tied_head_forward
from .linear import Linear, linear_backward, linear_forward
from .lora import LoRALinear, lora_backward, lora_forward
from .loss import (CrossEntropyLoss, cross_entropy_backward, cross_entropy_forward,
                   cross_entropy_forward_backward)
from .mlp import MLP
from .module import Module, ModuleList, Parameter, flatten_parameters
from .norm import LayerNorm, layernorm_backward, layernorm_forward

__all__ = ["GELU", "Activation", "ReLU", "Softmax", "activation_functions", "gelu_backward",
           "gelu_forward", "gelu_tanh_backward", "gelu_tanh_forward", "relu_backward",
           "relu_forward", "softmax_backward", "softmax_forward", "KVCache", "MultiHeadAttention",
           "merge_heads", "split_heads", "Block", "DecoderLayer", "EncoderLayer", "Dropout",
           "dropout_backward", "dropout_forward", "Embedding", "LearnedPositionalEmbedding",
           "SinusoidalPositionalEncoding", "embedding_backward", "embedding_forward",
           "sinusoidal_encoding", "TiedHead", "tied_head_backward", "tied_head_forward", "Linear",
           "linear_backward", "linear_forward", "LoRALinear", "lora_backward", "lora_forward",
           "CrossEntropyLoss", "cross_entropy_backward", "cross_entropy_forward", "MLP", "Module",
           "ModuleList", "Parameter", "flatten_parameters", "LayerNorm", "layernorm_backward",
           "layernorm_forward"]
