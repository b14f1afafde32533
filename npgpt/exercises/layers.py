"""The element-wise and affine exercises: Linear, ReLU, GELU (tanh), softmax, dropout.

Each mistake is a wrong backward as people write it, on the template's cache.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .spec import Exercise, Mistake

SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def _rows(a):
    """(..., n) -> (N, n): every position of every sequence, one row each."""
    return a.reshape(-1, a.shape[-1])


# -- Linear --------------------------------------------------------------------------------

def linear_no_transpose(dout, cache):
    x, w, has_bias = cache
    return dout @ w, _rows(x).T @ _rows(dout), _rows(dout).sum(axis=0)


def linear_dw_transposed(dout, cache):
    x, w, has_bias = cache
    return dout @ w.T, _rows(dout).T @ _rows(x), _rows(dout).sum(axis=0)


def linear_mean_over_rows(dout, cache):
    x, w, has_bias = cache
    n = _rows(x).shape[0]
    return dout @ w.T, _rows(x).T @ _rows(dout) / n, _rows(dout).mean(axis=0)


def linear_db_first_axis(dout, cache):
    x, w, has_bias = cache
    return dout @ w.T, _rows(x).T @ _rows(dout), dout.sum(axis=0)


LINEAR = Exercise(
    name="linear", title="Linear: y = x @ W + b",
    hints=("Write y for one row first: y_j = sum_i x_i W_ij + b_j. Which x_i and W_ij does y_j "
           "depend on? dx_i collects the dy_j of every j it reached.",
           "Shapes decide the order of each product: dx must be (..., in), dW (in, out). Flatten "
           "the rows (x.reshape(-1, in)) so that the batch and time axes become one axis N.",
           "W and b are used by every row: their gradients are sums over the N rows, not means "
           "(the mean over positions belongs to the loss, not to this layer).",
           "dx = dY @ W^T;   dW = X^T @ dY (rows flattened);   db = dY summed over the rows."),
    mistakes=(Mistake("the transpose of W forgotten in dx", "dx = dout @ W has the right shape "
                      "only because W is square; write dx_i = sum_j dy_j W_ij and see which index "
                      "of W is summed.", linear_no_transpose),
              Mistake("dW transposed", "dW must be (in, out), like W: X^T @ dY, not dY^T @ X "
                      "(with a square W both have the shape).", linear_dw_transposed),
              Mistake("the mean over rows instead of the sum", "every row used the same W: its "
                      "contributions add up; a 1/N belongs to a mean in the loss, which has its "
                      "own backward.", linear_mean_over_rows),
              Mistake("db summed over the first axis only", "dout is (B, T, out): summing axis 0 "
                      "leaves (T, out). Sum over every axis but the last.", linear_db_first_axis)),
    reference=nn.linear_backward, sources=(nn.linear_forward, nn.linear_backward))


# -- ReLU ----------------------------------------------------------------------------------

def relu_no_mask(dout, cache):
    return dout


def relu_inverted_mask(dout, cache):
    return dout * ~cache


def relu_local_derivative_only(dout, cache):
    return cache.astype(np.float64)


RELU = Exercise(
    name="relu", title="ReLU: y = max(x, 0)",
    hints=("Each y_i depends on x_i alone: dx is dout times the local slope dy_i/dx_i.",
           "The slope is 1 where x > 0 and 0 where x < 0. The cache already holds where x > 0.",
           "dx = dout * (x > 0)."),
    mistakes=(Mistake("the mask forgotten", "ReLU's slope is 0 where x < 0: those elements pass "
                      "no gradient.", relu_no_mask),
              Mistake("the mask inverted", "the cache is True where x > 0, where the gradient "
                      "passes.", relu_inverted_mask),
              Mistake("the local slope without dout", "the chain rule multiplies the local slope "
                      "by the upstream gradient dout.", relu_local_derivative_only)),
    reference=nn.relu_backward, sources=(nn.relu_forward, nn.relu_backward), kinked=True)


# -- GELU (tanh) ---------------------------------------------------------------------------

def _gelu_parts(x, t, three=3.0):
    du = SQRT_2_OVER_PI * (1 + three * 0.044715 * x * x)     # du/dx
    return 0.5 * (1 + t), 0.5 * x * (1 - t * t) * du


def gelu_first_term_only(dout, cache):
    x, t = cache
    return dout * 0.5 * (1 + t)


def gelu_tanh_derivative_wrong(dout, cache):
    x, t = cache
    first, _ = _gelu_parts(x, t)
    return dout * (first + 0.5 * x * (1 - t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))


def gelu_inner_derivative_forgotten(dout, cache):
    x, t = cache
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t))


def gelu_cube_without_three(dout, cache):
    x, t = cache
    first, second = _gelu_parts(x, t, three=1.0)
    return dout * (first + second)


GELU_TANH = Exercise(
    name="gelu_tanh", title="GELU, tanh form: y = 0.5 x (1 + tanh(u))",
    hints=("y = f(x) g(x) with f = 0.5 x and g = 1 + tanh(u(x)): the product rule gives two terms.",
           "d tanh(u)/du = 1 - tanh(u)^2 = 1 - t^2, and t is in the cache.",
           "The chain rule continues inside: u = sqrt(2/pi) (x + 0.044715 x^3), "
           "du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).",
           "dx = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2))."),
    mistakes=(Mistake("only the first term of the product rule", "y = 0.5 x (1 + t) and t depends on "
                      "x too: the product rule has a second term.", gelu_first_term_only),
              Mistake("tanh's derivative as 1 - t", "d tanh(u)/du = 1 - tanh(u)^2.",
                      gelu_tanh_derivative_wrong),
              Mistake("the inner derivative du/dx forgotten", "t = tanh(u(x)): the chain rule "
                      "multiplies by du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).",
                      gelu_inner_derivative_forgotten),
              Mistake("the 3 of d(x^3)/dx forgotten", "d(x^3)/dx = 3 x^2.", gelu_cube_without_three)),
    reference=nn.gelu_tanh_backward, sources=(nn.gelu_tanh_forward, nn.gelu_tanh_backward))


# -- softmax -------------------------------------------------------------------------------

def softmax_no_sum_term(dout, cache):
    y, axis = cache
    return y * dout


def softmax_diagonal_only(dout, cache):
    y, axis = cache
    return y * (1 - y) * dout


def softmax_sum_over_everything(dout, cache):
    y, axis = cache
    return y * (dout - np.sum(dout * y))


def softmax_sum_sign(dout, cache):
    y, axis = cache
    return y * (dout + np.sum(dout * y, axis=axis, keepdims=True))


SOFTMAX = Exercise(
    name="softmax", title="softmax: y = exp(x) / sum(exp(x))",
    hints=("Every y_i of a row depends on every x_j of the row (through the sum), so the "
           "Jacobian is a full matrix per row, not a diagonal.",
           "dy_i/dx_j = y_i (delta_ij - y_j): y_i (1 - y_i) on the diagonal, -y_i y_j off it.",
           "Contract with dout: dx_j = sum_i dout_i y_i (delta_ij - y_j) = y_j (dout_j - sum_i dout_i y_i).",
           "dx = y * (dout - sum(dout * y, along the softmax axis, keepdims=True))."),
    mistakes=(Mistake("the sum term dropped", "y_i depends on every x_j of its row through the "
                      "normalising sum: the off-diagonal terms -y_i y_j add up to a sum.",
                      softmax_no_sum_term),
              Mistake("the diagonal of the Jacobian only", "y_i (1 - y_i) is dy_i/dx_i; the "
                      "off-diagonal dy_i/dx_j = -y_i y_j count too.", softmax_diagonal_only),
              Mistake("the sum over the whole array", "each row is normalised alone: the sum "
                      "runs along the softmax axis (keepdims=True).", softmax_sum_over_everything),
              Mistake("the sum term added", "dy_i/dx_j = y_i (delta_ij - y_j): the y_j term comes "
                      "with a minus.", softmax_sum_sign)),
    reference=nn.softmax_backward, sources=(nn.softmax_forward, nn.softmax_backward))


# -- dropout -------------------------------------------------------------------------------

def dropout_mask_forgotten(dout, cache):
    return dout


def dropout_scale_forgotten(dout, cache):
    return dout * (cache != 0)


def dropout_scale_twice(dout, cache):
    return dout * cache * cache.max()


def dropout_mask_inverted(dout, cache):
    return dout * (cache == 0) * cache.max()


DROPOUT = Exercise(
    name="dropout", title="dropout: y = x * keep / (1 - p)",
    hints=("The forward is y = x * mask with a fixed mask (drawn once): a product with a constant.",
           "Dropped elements did not reach y: they get no gradient. The kept ones were scaled.",
           "The cache is the mask already scaled by 1 / (1 - p).",
           "dx = dout * mask (None as the cache: dx = dout)."),
    mistakes=(Mistake("the mask forgotten", "a dropped element did not reach y: its gradient is 0.",
                      dropout_mask_forgotten),
              Mistake("the 1/(1-p) scale forgotten", "the kept elements were multiplied by "
                      "1/(1-p) in the forward: so is their gradient.", dropout_scale_forgotten),
              Mistake("the 1/(1-p) scale applied twice", "the cached mask is already scaled: "
                      "multiply by it once.", dropout_scale_twice),
              Mistake("the mask inverted", "the gradient flows where the mask is non-zero, "
                      "through the kept elements.", dropout_mask_inverted)),
    reference=nn.dropout_backward, sources=(nn.dropout_forward, nn.dropout_backward))
