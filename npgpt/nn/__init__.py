"""The layers: each as a pure forward/backward pair and as a Module (see DESIGN.md)."""

from .module import Module, ModuleList, Parameter, flatten_parameters
from .linear import Linear, linear_backward, linear_forward
