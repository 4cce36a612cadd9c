"""OVMS Python nodes: ``PythonExecutorCalculator``, the tensor converter and ``Tensor``.

Handler scripts written for OVMS run unchanged: ``from pyovms import Tensor`` resolves to
``calculators.python_executor.tensor.Tensor`` because the calculator registers a ``pyovms``
module in ``sys.modules`` before it imports any handler (``handler.install_pyovms``).
"""

from calculators.python_executor.tensor import Tensor

__all__ = ["Tensor"]
