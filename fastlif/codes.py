"""The one table of the integer codes that Python, C++ and Triton share.

Reset mechanisms follow snnTorch's ``SpikingNeuron.reset_dict`` (the values of the
``reset_mechanism_val`` buffer in an snnTorch ``state_dict``); surrogates are fastlif's own.
``csrc/codes.h`` mirrors this file (``tests/test_codes.py`` compares it through
``fastlif._C.codes()``); the Triton kernels import it (``kernels/common.py``).
"""

RESET_MECHANISMS = ("subtract", "zero", "none")  # a mechanism's code is its index
RESET_SUBTRACT, RESET_ZERO, RESET_NONE = range(3)
RESET_CODES = {name: code for code, name in enumerate(RESET_MECHANISMS)}

SURROGATE_NAMES = ("atan", "fast_sigmoid", "sigmoid", "triangular", "straight_through_estimator",
                   "disabled", "sj_sigmoid", "sj_atan")  # a surrogate's kind is its index
ATAN, FAST_SIGMOID, SIGMOID, TRIANGULAR, STRAIGHT_THROUGH, NO_GRAD = range(6)
# SpikingJelly's Sigmoid and ATan (fastlif.spikingjelly): Heaviside z >= 0, SpikingJelly's
# derivative formulas and operation order. After NO_GRAD, so the snnTorch kinds keep their codes.
SJ_SIGMOID, SJ_ATAN = 6, 7

# Element types of the C++ kernels (the compute dtype: fp32, or fp64 for fp64 input).
FLOAT32, FLOAT64 = range(2)


def reset_code(reset_mechanism):
    """The code of a reset mechanism's name, or a ValueError that lists the names."""
    try:
        return RESET_CODES[reset_mechanism]
    except (KeyError, TypeError):
        raise ValueError(f"unknown reset_mechanism {reset_mechanism!r}; expected one of "
                         f"{', '.join(map(repr, RESET_MECHANISMS))}") from None


def is_immediate(reset_mode, reset_delay):
    """Whether a step resets in the step it spikes (reset_delay=False with a reset to do)."""
    return not reset_delay and reset_mode != RESET_NONE
