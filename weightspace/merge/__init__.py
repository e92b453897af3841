"""Model merging: interpolation and barrier curves; weighted averaging, task arithmetic, TIES, DARE."""
from .average import weighted_average
from .barrier import BarrierCurve, barrier_curve, barrier_table, evaluate
from .dare import dare
from .interpolate import interpolate
from .plot import plot_barrier
from .task_arithmetic import task_arithmetic
from .ties import ties_merging

__all__ = ["interpolate", "barrier_curve", "BarrierCurve", "barrier_table", "evaluate", "plot_barrier",
           "weighted_average", "task_arithmetic", "ties_merging", "dare"]
